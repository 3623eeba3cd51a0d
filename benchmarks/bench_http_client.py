"""The rollout client's HTTP pool: CPU the client process spends per wave of concurrent requests.

    python benchmarks/bench_http_client.py                      # 256 requests per wave, 10 waves per pool
    python benchmarks/bench_http_client.py --requests 512 --waves 5

A wave is what one RL step sends: ``--requests`` generate requests in flight at once, each answered
after a random 50–400 ms (a server generating), then the next wave. The server is a FastAPI app under
uvicorn in a subprocess (pinned to the first core, when there are two); the client runs in this
process (pinned to another core), so its CPU time (``time.process_time``) is the pool's cost, the
cost that lands on the trainer's core in a run. Pools, alternating wave by wave:

* ``httpx``: ``httpx.AsyncClient`` on its own pool (httpcore), with the limits the rollout client
  used before: no connection cap, 256 keep-alive connections;
* ``aiohttp``: ``httpx.AsyncClient`` on :class:`areal_core.rollout.transport.PooledTransport`
  (aiohttp's pool, what the rollout client uses now).

Prints the client CPU seconds per wave of each, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from areal_core.launcher.support import free_port
from areal_core.rollout.transport import PooledTransport

SERVER = '''
import asyncio, random
from fastapi import FastAPI
app = FastAPI()
@app.post("/generate")
async def generate(body: dict):
    await asyncio.sleep(random.uniform(0.05, 0.4))
    return {"output_ids": [1, 2, 3], "meta_info": {"finish_reason": {"type": "stop"}}}
@app.get("/health")
async def health():
    return {}
'''


async def wave(client: httpx.AsyncClient, url: str, n: int) -> float:
    """CPU seconds of this process while ``n`` concurrent requests are answered."""
    start = time.process_time()
    responses = await asyncio.gather(*[client.post(url, json={"input_ids": list(range(30))}) for _ in range(n)])
    assert all(r.status_code == 200 for r in responses)
    return time.process_time() - start


async def measure(url: str, requests: int, waves: int) -> dict[str, list[float]]:
    clients = {
        "httpx": httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=256,
                                                                     keepalive_expiry=2.0)),
        "aiohttp": httpx.AsyncClient(timeout=None, transport=PooledTransport(2.0)),
    }
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for client in clients.values():  # warm-up: open the connections
            await wave(client, url, requests)
        for _ in range(waves):
            for name, client in clients.items():
                cpu[name].append(await wave(client, url, requests))
    finally:
        for client in clients.values():
            await client.aclose()
    return cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=256, help="concurrent requests per wave")
    ap.add_argument("--waves", type=int, default=10, help="timed waves per pool")
    args = ap.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_server.py").write_text(SERVER)
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench_server:app", "--port", str(port),
                                   "--log-level", "warning"], cwd=tmp)
        try:
            if len(cores) > 1:
                os.sched_setaffinity(server.pid, {cores[0]})
                os.sched_setaffinity(0, set(cores[1:]))
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("bench_http_client: the uvicorn server did not start") from None
                    time.sleep(0.2)
            cpu = asyncio.run(measure(f"http://127.0.0.1:{port}/generate", args.requests, args.waves))
        finally:
            server.terminate()
            server.wait(timeout=10)
    med = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"{args.requests} concurrent requests per wave, {args.waves} waves per pool (client CPU seconds per wave):")
    for name, values in cpu.items():
        print(f"  {name:8} median {med[name]:.3f} s  (" + ", ".join(f"{v:.3f}" for v in values) + ")")
    print(f"httpx pool / aiohttp pool: {med['httpx'] / med['aiohttp']:.1f}x the client CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
