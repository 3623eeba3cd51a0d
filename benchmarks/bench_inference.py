"""Embedded server (continuous batching) vs Hugging Face ``generate`` in fixed batches, and vLLM.

Run::

    python benchmarks/bench_inference.py [--size 3m] [--requests 64] [--batch-size 32] [--threads 2]
    python benchmarks/bench_inference.py --vllm-python /envs/vllm/bin/python   # adds a vLLM column

Workload: ``--requests`` prompts of 16-64 random tokens; each asks for its own number of new
tokens, drawn from a long-tailed log-normal (median ``--median-tokens``, sigma ``--sigma``,
clipped to [8, ``--max-new-tokens``]); ``ignore_eos`` so lengths are exactly controlled; plain
sampling at temperature 1 on both sides.

- HF: the requests in arrival order, ``--batch-size`` at a time, each batch one ``generate``
  call (left padding) that runs until its longest request is done.
- Server: all requests sent at once to one embedded server (``--batch-size`` rows decode
  together), each leaving the batch when its own length is reached.

- vLLM (with ``--vllm-python``): the same as the embedded server, against a vLLM server started by
  the ``vllm`` backend (``--max-num-seqs`` = ``--batch-size``, OpenMP bound to ``--threads`` cores).

All count only the tokens the requests asked for, use the same model, dtype (fp32) and
number of threads. Timed passes alternate HF / server (the server idles while HF runs);
the best pass of each is kept. Prints tokens/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path


def workload(n: int, median: int, sigma: float, cap: int, seed: int) -> list[tuple[list[int], int]]:
    """``n`` (prompt token ids, max_new_tokens) pairs with long-tailed lengths."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 500) for _ in range(rng.randint(16, 64))]
        new = int(min(cap, max(8, round(math.exp(rng.gauss(math.log(median), sigma))))))
        out.append((prompt, new))
    return out


def hf_runner(model_path: str, batch_size: int):
    """A function that runs HF ``generate`` over fixed batches of the given requests, in order."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

    def run(reqs):
        for i in range(0, len(reqs), batch_size):
            batch = reqs[i:i + batch_size]
            longest = max(len(p) for p, _ in batch)
            ids = torch.tensor([[0] * (longest - len(p)) + p for p, _ in batch])
            mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p, _ in batch])
            config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0,
                                      eos_token_id=None, max_new_tokens=max(n for _, n in batch))
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            assert out.shape[1] == longest + config.max_new_tokens, "HF stopped early: eos was not disabled"

    return run


def server_runner(backend, addr: str):
    """A function that sends all requests at once to the server and waits for every answer."""
    import httpx

    from areal_core.api.types import ModelRequest, SamplingParams
    from areal_core.auth import auth_headers

    async def send_all(reqs):
        async with httpx.AsyncClient(timeout=3600, headers=auth_headers()) as client:
            resps = await asyncio.gather(*(backend.generate(client, addr, ModelRequest(
                p, SamplingParams(max_new_tokens=n, temperature=1.0, ignore_eos=True))) for p, n in reqs))
        assert [len(r.output_ids) for r in resps] == [n for _, n in reqs]

    return lambda reqs: asyncio.run(send_all(reqs))


def vllm_runner(servers: contextlib.ExitStack, args, model_path: str, workdir: Path):
    """Start a vLLM server on ``model_path`` (kept running by ``servers``); its request runner."""
    from areal_core.testing.inference_backend import free_port, launched_server
    from areal_vllm.backend import VLLMBackend
    from areal_vllm.config import VLLMConfig

    bind = "0" if args.threads == 1 else f"0-{args.threads - 1}"
    backend = VLLMBackend(VLLMConfig(name="vllm", python=args.vllm_python, dtype="float32",
                                     max_num_seqs=args.batch_size, cpu_threads_bind=bind))
    port = free_port()
    addr = f"127.0.0.1:{port}"
    servers.enter_context(launched_server(backend.server_command(model_path, "127.0.0.1", port), addr, 600,
                                          None, workdir / "vllm.log"))
    return server_runner(backend, addr)


def timed(fn, arg) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="3m", help="tiny model size: 0.2m, 3m, 18m")
    parser.add_argument("--model", default=None, help="an HF model directory instead of a tiny model")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="HF batch size = server max running batch")
    parser.add_argument("--median-tokens", type=int, default=48)
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma of the new-token counts")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on each side (1 avoids OpenMP stalls on a shared 2-core machine)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed passes; the best of each is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm-python", default=None,
                        help="interpreter of an environment with vLLM: also time a vLLM server (areal-vllm)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from areal_core.testing.inference_backend import free_port, launched_server
    from areal_core.testing.tiny import make_tiny_model
    from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_path = args.model or str(make_tiny_model(workdir / "model", size=args.size))
        requests = workload(args.requests, args.median_tokens, args.sigma, args.max_new_tokens, args.seed)
        lengths = sorted(n for _, n in requests)
        useful = sum(lengths)
        print(f"model {args.model or args.size}, {args.requests} requests, batch {args.batch_size}, threads {args.threads}")
        print(f"new tokens per request: min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
              f"max {lengths[-1]}, total {useful}")
        backend = EmbeddedBackend(EmbeddedConfig(name="embedded", max_batch=args.batch_size, threads=args.threads,
                                                 dtype="float32"))
        port = free_port()
        addr = f"127.0.0.1:{port}"
        argv = backend.server_command(model_path, "127.0.0.1", port)
        with contextlib.ExitStack() as servers:
            servers.enter_context(launched_server(argv, addr, 300, {"OMP_NUM_THREADS": str(args.threads)},
                                                  workdir / "server.log"))
            runners = {"HF generate, fixed batches": hf_runner(model_path, args.batch_size),
                       "embedded server": server_runner(backend, addr)}
            if args.vllm_python:
                runners["vLLM server"] = vllm_runner(servers, args, model_path, workdir)
            for run in runners.values():
                run(requests[:2])  # warm-up
            times: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(args.repeats):  # alternate, so a load change on this shared machine hits all
                for name, run in runners.items():
                    times[name].append(timed(run, requests))
        best = {name: min(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"{name:27s}: {useful / best[name]:9.0f} tok/s  (best of {[round(x, 2) for x in t]} s)")
        hf_s, server_s = best["HF generate, fixed batches"], best["embedded server"]
        print(f"ratio embedded / HF        : {hf_s / server_s:9.2f}x")
        if args.vllm_python:
            print(f"ratio vLLM / embedded      : {server_s / best['vLLM server']:9.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
