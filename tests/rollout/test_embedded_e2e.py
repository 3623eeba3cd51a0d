"""End to end against a real embedded inference server (areal-embedded) on the 0.2m tiny model:
interruption across a weight update, the controller with the real rlvr workflow, dead servers."""

import asyncio
import os
import subprocess
import threading

import pytest

pytest.importorskip("areal_embedded")
torch = pytest.importorskip("torch")

from areal_core.api.types import ModelRequest, SamplingParams, WeightUpdateMeta
from areal_core.config.schema import RolloutConfig
from areal_core.launcher.support import free_port
from areal_core.rollout.client import InferenceUnavailableError, RolloutClient
from areal_core.rollout.controller import RolloutController
from areal_core.rollout.reward_runner import RewardRunner
from areal_core.rollout.rlvr import RLVRConfig, RLVRWorkflow
from areal_sglang.protocol import get_weight_version


async def push_from_disk(client: RolloutClient, model_dir, version: int) -> None:
    """The trainer's disk update: the backend's updater loads ``model_dir``, then the version moves."""
    await client.push_weights(client.backend.weight_updater(WeightUpdateMeta(type="disk")), str(model_dir), version)
    client.weight_version.set(version)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny model and a perturbed copy of it (same tokenizer, visibly different greedy output)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from areal_core.testing.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("models")
    base = make_tiny_model(root / "base", size="0.2m")
    model = AutoModelForCausalLM.from_pretrained(base)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.std().clamp(min=0.02))
    model.save_pretrained(root / "perturbed")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "perturbed")
    return base, root / "perturbed"


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig

    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=16))
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(backend.server_command(str(models[0]), "127.0.0.1", port), stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    addr = f"127.0.0.1:{port}"
    async def wait_healthy():
        client = RolloutClient(backend, [addr])
        try:
            await client.wait_until_healthy(timeout_s=90)
        finally:
            await client.aclose()

    try:
        asyncio.run(wait_healthy())
    except Exception:  # noqa: BLE001 - any failure to start: stop the server, show its log
        proc.kill()
        raise AssertionError(f"embedded server did not start:\n{log_path.read_text()[-3000:]}") from None
    yield backend, addr
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def teacher_forced(model_dir, input_ids):
    """Greedy tokens and log-softmax of each next token, for every position of ``input_ids``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([input_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return logits.argmax(-1), logprobs


async def server_steps(client: RolloutClient, addr: str) -> int:
    resp = await client.http.get(f"http://{addr}/get_server_info")
    return int(resp.json()["decode_steps"])


async def test_dead_server_is_retried_then_reported(server):
    backend, addr = server
    dead = f"127.0.0.1:{free_port()}"
    client = RolloutClient(backend, [dead, addr])
    req = ModelRequest([1, 87, 85], SamplingParams(max_new_tokens=4, temperature=0.0))
    try:
        for _ in range(2):
            assert len((await client.agenerate(req)).output_ids) == 4
        assert client.stats()["failovers"] == 1
    finally:
        await client.aclose()
    other_dead = f"127.0.0.1:{free_port()}"
    client = RolloutClient(backend, [dead, other_dead])
    with pytest.raises(InferenceUnavailableError) as err:
        await client.agenerate(req)
    await client.aclose()
    assert f"{dead}: ConnectError" in str(err.value) and f"{other_dead}: ConnectError" in str(err.value)


def test_controller_with_rlvr_against_the_server(server, models):
    """Two synchronous training steps of rollout with a weight update between them; one sample's reward raises,
    another's hangs past the timeout: the run goes on, those samples are scored 0 and flagged."""
    from transformers import AutoTokenizer

    backend, addr = server
    base, _ = models
    tokenizer = AutoTokenizer.from_pretrained(base)
    release = threading.Event()

    def reward(prompt, completion, sample):
        if sample["id"] == 1:
            raise RuntimeError("verifier crashed")
        if sample["id"] == 2:
            release.wait(30)
        return float(len(completion) % 2)

    config = RolloutConfig(batch_size=3, max_head_offpolicyness=0, reward_timeout_s=0.5)
    workflow = RLVRWorkflow(RLVRConfig(name="rlvr", n_samples=2, max_new_tokens=12, temperature=1.0),
                            RewardRunner(reward, config.reward_timeout_s), tokenizer)
    data = [{"id": i, "prompt": f"What is {i} + {i}?"} for i in range(12)]
    with RolloutController(RolloutClient(backend, [addr]), config) as ctl:
        first = ctl.prepare_batch(data, workflow, timeout_s=120)
        ctl.pause()
        ctl.push_weights(backend.weight_updater(WeightUpdateMeta(type="disk")), str(base), 1)
        ctl.engine.weight_version.set(1)
        ctl.resume()
        second = ctl.prepare_batch(data, workflow, timeout_s=120)
        metrics = ctl.metrics()
    release.set()

    for batch in (first, second):
        assert len(batch) == 6 and len({t.group_id for t in batch}) == 3
        for t in batch:
            n_out = sum(t.loss_mask)
            assert 0 < n_out <= 12 and len(t.input_ids) == len(t.versions)
    flagged = {t.sample_id: t.info["reward_error"] for t in first + second if "reward_error" in t.info}
    assert set(flagged) == {"1", "2"} and "raised RuntimeError" in flagged["1"] and "0.5s" in flagged["2"]
    # η = 0 (synchronous): samples 0-2 start at version 0, samples 3-5 only after the update
    assert {t.sample_id for t in first} == {"0", "1", "2"} and {t.sample_id for t in second} == {"3", "4", "5"}
    assert {v for t in first for v in t.versions} == {-1, 0} and {v for t in second for v in t.versions} == {-1, 1}
    assert metrics["rollout/version"] == 1 and metrics["rollout/accepted"] == 6 and metrics["rollout/running"] == 0
    assert metrics["rollout/version_lag_max"] == 0 and metrics["inference/sync_s"] > 0


async def test_interruption_switches_weights_mid_generation(server, models):
    """Pause + load perturbed weights from disk + resume during one greedy generation: per-token
    versions show the switch, tokens before it are the old model's greedy choices and tokens after
    it the new model's (teacher-forced over the whole sequence), logprobs match to 1e-4. Last in the
    module: versions only move forward, so it leaves the server past the version 0 others start at."""
    backend, addr = server
    base, perturbed = models
    client = RolloutClient(backend, [addr])
    prompt = [1, 87, 85, 261, 201, 276]
    n_new = 400
    req = ModelRequest(prompt, SamplingParams(max_new_tokens=n_new, temperature=0.0, ignore_eos=True))
    try:
        v = await get_weight_version(client.http, addr)
        client.weight_version.set(v)
        start_steps = await server_steps(client, addr)
        task = asyncio.create_task(client.agenerate(req))
        while await server_steps(client, addr) < start_steps + 30:
            await asyncio.sleep(0.005)
        await client.pause()
        assert not task.done()
        await push_from_disk(client, perturbed, v + 1)
        await client.resume()
        resp = await task
    finally:
        await client.pause()  # leave the module's server at its base weights (versions only move forward)
        await push_from_disk(client, base, v + 2)
        await client.resume()
        await client.aclose()

    k = resp.output_versions.count(v)
    assert len(resp.output_ids) == n_new and resp.finish_reason == "length"
    assert 0 < k < n_new and resp.output_versions == [v] * k + [v + 1] * (n_new - k)
    assert resp.n_interruptions == 1

    full = prompt + resp.output_ids
    P = len(prompt)
    old_greedy, old_lp = teacher_forced(base, full)
    new_greedy, new_lp = teacher_forced(perturbed, full)
    # position P+i predicts output token i from logits at position P+i−1
    pred_old = old_greedy[P - 1:-1].tolist()
    pred_new = new_greedy[P - 1:-1].tolist()
    out = resp.output_ids
    assert out[:k] == pred_old[:k], "tokens before the update are the base model's greedy choices"
    assert out[k:] == pred_new[k:], "tokens after the update are the perturbed model's greedy choices"
    lp_old = old_lp[torch.arange(P - 1, P - 1 + k), torch.tensor(out[:k])]
    lp_new = new_lp[torch.arange(P - 1 + k, len(full) - 1), torch.tensor(out[k:])]
    served = torch.tensor(resp.output_logprobs)
    torch.testing.assert_close(served[:k], lp_old, atol=1e-4, rtol=0)
    torch.testing.assert_close(served[k:], lp_new, atol=1e-4, rtol=0)
    # the check has teeth: the base model scores the tokens after the update differently (both models
    # may pick the same tokens once a tiny model has fallen into repeating one, so compare logprobs)
    base_after = old_lp[torch.arange(P - 1 + k, len(full) - 1), torch.tensor(out[k:])]
    assert (served[k:] - base_after).abs().max() > 1e-2, "the perturbed weights must change the served logprobs"
