"""RolloutClient against in-test servers (rollout_fakes.ScriptedBackend): interruption, routing, failover."""

import asyncio

import pytest

from areal_core.api.types import ModelRequest, SamplingParams
from areal_core.errors import ArealError
from areal_core.rollout.client import InferenceUnavailableError, RolloutClient
from rollout_fakes import ScriptedBackend, next_token, token_logprob, update_weights


@pytest.fixture
def make_backend():
    """``make_backend(addrs=..., step_s=..., report_versions=...)`` -> ScriptedBackend."""
    return ScriptedBackend


@pytest.fixture
def backend():
    return ScriptedBackend()


def request(n=20, prompt=(5, 6, 7), rid="", stop=()):
    return ModelRequest(list(prompt), SamplingParams(max_new_tokens=n, stop_token_ids=list(stop)), rid=rid)


def expected_tokens(last_prompt_token, versions):
    """Tokens the scripted rule produces given the version of each position."""
    out, prev = [], last_prompt_token
    for v in versions:
        prev = next_token(prev, v)
        out.append(prev)
    return out


async def test_generate_without_interruption(backend):
    client = RolloutClient(backend, list(backend.servers))
    resp = await client.agenerate(request(12))
    assert resp.finish_reason == "length" and resp.n_interruptions == 0
    assert resp.input_ids == [5, 6, 7]
    assert resp.output_ids == expected_tokens(7, [0] * 12)
    assert resp.output_logprobs == [token_logprob(0)] * 12 and resp.output_versions == [0] * 12


async def test_stop_token_ends_generation(backend):
    client = RolloutClient(backend, list(backend.servers))
    stop = expected_tokens(7, [0] * 5)[-1]  # the 5th token
    resp = await client.agenerate(request(50, stop=[stop]))
    assert resp.finish_reason == "stop" and len(resp.output_ids) == 5


@pytest.mark.parametrize("report_versions", [True, False])
async def test_interruption_spans_versions(make_backend, report_versions):
    """Pause + update + resume mid-generation: the request resumes with prompt + partial tokens,
    a lower max_new_tokens, and every token carries the version that produced it."""
    backend = make_backend(addrs=["a:1"], step_s=0.01, report_versions=report_versions)
    client = RolloutClient(backend, ["a:1"])
    task = asyncio.create_task(client.agenerate(request(40)))
    while backend.servers["a:1"].in_flight == 0 or len(backend.servers["a:1"].inputs) == 0:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # ~10 tokens at version 0
    await client.pause()
    await update_weights(client, 1)
    await asyncio.sleep(0.05)  # paused: nothing is generated
    await client.resume()
    resp = await task

    k = resp.output_versions.count(0)
    assert 0 < k < 40 and resp.output_versions == [0] * k + [1] * (40 - k)
    assert resp.output_ids == expected_tokens(7, resp.output_versions)
    assert resp.output_logprobs == [token_logprob(v) for v in resp.output_versions]
    assert resp.finish_reason == "length" and resp.n_interruptions == 1 and resp.input_ids == [5, 6, 7]
    # the second round re-submitted prompt + the k partial tokens, asking for the remaining 40 − k
    first, second = backend.servers["a:1"].inputs
    assert first == [5, 6, 7] and second == [5, 6, 7] + resp.output_ids[:k]
    assert client.get_version() == 1
    stats = client.stats()
    assert stats["interruptions"] == 1 and stats["sync_s"] >= 0 and stats["pause_s"] >= 0


async def test_abort_by_someone_else_is_retried_after_backoff(make_backend):
    backend = make_backend(addrs=["a:1"], step_s=0.005)
    client = RolloutClient(backend, ["a:1"], pause_poll_s=0.01)
    backend.servers["a:1"].paused = True  # paused by another controller, not by this client
    task = asyncio.create_task(client.agenerate(request(10)))
    await asyncio.sleep(0.1)
    assert not task.done()
    backend.servers["a:1"].paused = False
    resp = await task
    assert resp.output_ids == expected_tokens(7, [0] * 10) and resp.n_interruptions >= 1


async def test_round_robin_and_sticky_rid(make_backend):
    backend = make_backend(addrs=["a:1", "b:1", "c:1"])
    client = RolloutClient(backend, ["a:1", "b:1", "c:1"])
    for _ in range(6):
        await client.agenerate(request(2))
    assert [s.requests for s in backend.servers.values()] == [2, 2, 2]
    for _ in range(4):
        await client.agenerate(request(2, rid="traj-1"))
    counts = [s.requests for s in backend.servers.values()]
    assert sorted(counts) == [2, 2, 6]  # every turn of trajectory traj-1 went to one server


async def test_dead_server_is_retried_on_another(make_backend):
    backend = make_backend(addrs=["a:1", "b:1"])
    backend.servers["a:1"].dead = True
    client = RolloutClient(backend, ["a:1", "b:1"])
    for _ in range(4):
        resp = await client.agenerate(request(3))
        assert len(resp.output_ids) == 3
    assert backend.servers["b:1"].requests == 4
    assert client.stats()["failovers"] == 1  # a:1 then sits out its cooldown


async def test_every_server_dead_is_a_clear_error(make_backend):
    backend = make_backend(addrs=["a:1", "b:1"])
    for s in backend.servers.values():
        s.dead = True
    client = RolloutClient(backend, ["a:1", "b:1"])
    with pytest.raises(InferenceUnavailableError) as err:
        await client.agenerate(request(3))
    msg = str(err.value)
    assert "every inference server" in msg and "a:1: ConnectionError" in msg and "b:1: ConnectionError" in msg


async def test_hanging_server_times_out_and_fails_over(make_backend):
    backend = make_backend(addrs=["a:1", "b:1"])
    backend.servers["a:1"].hang = True
    client = RolloutClient(backend, ["a:1", "b:1"], request_timeout_s=0.2)
    resp = await client.agenerate(request(3))
    assert len(resp.output_ids) == 3 and backend.servers["b:1"].requests == 1
    backend.servers["b:1"].hang = True
    client._dead_until.clear()
    with pytest.raises(InferenceUnavailableError, match=r"a:1: no answer within request_timeout_s=0.2"):
        await client.agenerate(request(3))


async def test_update_failure_names_the_server_and_keeps_the_version(make_backend):
    backend = make_backend(addrs=["a:1", "b:1"])
    client = RolloutClient(backend, ["a:1", "b:1"])
    backend.servers["b:1"].dead = True
    with pytest.raises(ConnectionError, match="b:1"):
        await update_weights(client, 3)
    assert client.get_version() == 0
    assert await client.health() == {"a:1": True, "b:1": False}


def test_bad_arguments_are_arealerrors(backend):
    with pytest.raises(ArealError, match="at least one"):
        RolloutClient(backend, [])
    with pytest.raises(ArealError, match="duplicate"):
        RolloutClient(backend, ["a:1", "a:1"])
    client = RolloutClient(backend, list(backend.servers))
    with pytest.raises(ArealError, match="max_new_tokens"):
        asyncio.run(client.agenerate(request(0)))


def test_client_moves_to_a_new_event_loop(backend):
    """E.g. a health check under asyncio.run, then the rollout controller's own loop."""
    client = RolloutClient(backend, list(backend.servers))
    assert asyncio.run(client.health()) == {a: True for a in backend.servers}
    for _ in range(2):
        assert len(asyncio.run(client.agenerate(request(3))).output_ids) == 3


async def test_busy_time_is_the_union_of_in_flight_rounds(make_backend):
    """busy_s counts wall time with at least one round in flight: overlapping requests count once,
    and idle gaps not at all."""
    import time

    backend = make_backend(addrs=["a:1"], step_s=0.01)
    client = RolloutClient(backend, ["a:1"])
    assert client.busy_s() == 0.0
    start = time.monotonic()
    await asyncio.gather(client.agenerate(request(10)), client.agenerate(request(10)))  # ~0.1 s, together
    together = time.monotonic() - start
    busy = client.busy_s()
    assert 0.09 <= busy <= together + 1e-6
    await asyncio.sleep(0.2)  # idle: not busy
    assert client.busy_s() == busy
    assert client.stats()["busy_s"] == busy
