"""Lost and stopped inference servers (issue 16), with real embedded servers started by the local
scheduler on loopback: control calls have deadlines, a stopped (SIGSTOP) or killed (SIGKILL)
server is named with its address, pid, state or signal and log tail, and with two servers the
run goes on with the other one (``rollout.on_server_lost=continue``) or stops (``stop``)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

pytest.importorskip("areal_embedded")
pytestmark = pytest.mark.slow  # starts two servers (~40 s on 2 shared cores): tox -e faults-slow

from areal_core.api.types import ModelRequest, SamplingParams, WeightUpdateMeta
from areal_core.auth import API_KEY_ENV, auth_headers
from areal_core.launcher.local import LocalScheduler, LocalSchedulerConfig
from areal_core.rollout.client import InferenceUnavailableError, RolloutClient
from areal_core.testing.inference_backend import make_served_model

KEY = "faults-test-key"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two embedded servers on loopback, started as ``areal train`` starts them (key in the env)."""
    from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig

    model = make_served_model(tmp_path_factory.mktemp("model") / "m")
    old = os.environ.get(API_KEY_ENV)
    os.environ[API_KEY_ENV] = KEY  # what ensure_run_key() does in the driver
    scheduler = LocalScheduler(LocalSchedulerConfig(), log_dir=tmp_path_factory.mktemp("logs"))
    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=4))
    try:
        with scheduler:
            addrs = scheduler.start_inference_servers(backend, str(model), 2, env={API_KEY_ENV: KEY,
                                                                                  "OMP_NUM_THREADS": "1"})
            yield scheduler, backend, addrs, model
    finally:
        if old is None:
            os.environ.pop(API_KEY_ENV, None)
        else:
            os.environ[API_KEY_ENV] = old


def client_for(servers, **kw):
    scheduler, backend, addrs, _ = servers
    client = RolloutClient(backend, list(addrs), control_timeout_s=2.0, weight_update_timeout_s=30.0, **kw)
    client.describe_server = scheduler.describe_server
    return client


def test_servers_refuse_requests_without_the_run_key(servers):
    _, _, addrs, _ = servers
    assert auth_headers() == {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"http://{addrs[0]}/health", timeout=10).status_code == 401
    assert httpx.get(f"http://{addrs[0]}/health", headers=auth_headers(), timeout=10).status_code == 200


def test_a_stopped_server_fails_pause_by_its_deadline_and_is_named(servers):
    """A SIGSTOPped server used to block the trainer in pause forever."""
    scheduler, _, addrs, _ = servers
    pid = scheduler.servers[addrs[0]].pid
    client = client_for(servers, on_server_lost="stop")
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(InferenceUnavailableError) as err:
            asyncio.run(client.pause())
        elapsed = time.monotonic() - start
    finally:
        os.kill(pid, signal.SIGCONT)
    message = str(err.value)
    assert elapsed < 10
    assert "lost 1 of 2 inference servers (rollout.on_server_lost=stop)" in message
    assert f"{addrs[0]}: pause: TimeoutError: pause: no answer within 2s" in message
    assert f"server0 {addrs[0]} (pid {pid}) is stopped (SIGSTOP or a debugger)" in message
    asyncio.run(client_for(servers).resume())  # both answer again


def test_losing_one_of_two_servers_does_not_end_the_run(servers):
    scheduler, backend, addrs, model = servers
    client = client_for(servers)
    victim = scheduler.servers[addrs[1]]
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait()
    req = ModelRequest([5, 17, 33], SamplingParams(max_new_tokens=4, temperature=0.0))

    async def step():
        await client.pause()
        await client.push_weights(backend.weight_updater(WeightUpdateMeta(type="disk")), str(model), 7)
        await client.resume()
        responses = await asyncio.gather(*(client.agenerate(req) for _ in range(4)))
        await client.aclose()
        return responses

    responses = asyncio.run(step())
    assert client.addrs == [addrs[0]] and list(client.lost) == [addrs[1]]
    assert f"server1 {addrs[1]} (pid {victim.pid}) was killed by SIGKILL; end of" in client.lost[addrs[1]]
    assert all(len(r.output_ids) == 4 and r.output_versions == [7] * 4 for r in responses)


def test_lost_servers_are_restarted_at_the_current_version(servers):
    """``on_server_lost=restart``: the local scheduler starts them again; they get the last pushed
    weights and version before the run goes on."""
    scheduler, backend, addrs, model = servers
    client = client_for(servers, on_server_lost="restart")
    client.restart_server = scheduler.restart_server
    updater = backend.weight_updater(WeightUpdateMeta(type="disk"))
    req = ModelRequest([5, 17, 33], SamplingParams(max_new_tokens=4, temperature=0.0))

    async def scenario():
        await client.pause()  # server1 is dead since the previous test: restarted here, at no push yet
        await client.push_weights(updater, str(model), 8)
        await client.resume()
        victim = scheduler.servers[addrs[0]]
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait()
        await client.pause()  # server0 lost: restarted and brought to version 8 before the push of 9
        await client.push_weights(updater, str(model), 9)
        await client.resume()
        responses = await asyncio.gather(*(client.agenerate(req) for _ in range(4)))
        await client.aclose()
        return victim.pid, responses

    old_pid, responses = asyncio.run(scenario())
    assert client.addrs == addrs and client.lost == {} and client.stats()["restarts"] == 2
    assert scheduler.servers[addrs[0]].pid != old_pid and scheduler.servers[addrs[0]].alive()
    assert all(r.output_versions == [9] * 4 for r in responses)
