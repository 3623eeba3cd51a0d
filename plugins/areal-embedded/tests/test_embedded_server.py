"""The embedded server against Hugging Face references: greedy tokens, logprobs, seeds, batching,
interruption, and weight updates from disk and over a gloo process group.

One server (tiny 0.2m model "A") serves the whole module; tests that load other weights ("B")
put A back before they return.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from areal_core.api.types import ModelRequest, SamplingParams, WeightUpdateMeta
from areal_core.testing.inference_backend import free_port, make_served_model, serving
from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig
from areal_sglang.protocol import get_weight_version

PROMPTS = [[5, 17, 33, 9, 100], [7, 8], [44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54], [300, 301, 302]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return str(make_served_model(root / "A", seed=0)), str(make_served_model(root / "B", seed=1))


@pytest.fixture(scope="module")
def hf(models):
    return {name: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            for name, path in zip("AB", models)}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=8, seed=0))
    with serving(backend, models[0], tmp_path_factory.mktemp("log") / "server.log") as addr:
        yield backend, addr


def run(fn):
    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            return await fn(client)

    return asyncio.run(main())


def generate_all(server, reqs):
    backend, addr = server
    return run(lambda c: asyncio.gather(*(backend.generate(c, addr, r) for r in reqs)))


def hf_greedy(model, prompt, max_new_tokens, **kw):
    """HF greedy continuation. The explicit attention mask matters: without it ``generate`` masks
    every prompt token equal to the pad id (0), which a long generated prefix may contain."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=0, **kw)
    return out[0, len(prompt):].tolist()


def reference_logprobs(model, prompt, output, temperature=1.0, top_k=-1, top_p=1.0):
    """Teacher-forced logprobs of ``output`` under temperature/top-k/top-p, one position at a time."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + output])).logits[0, len(prompt) - 1:-1].double()
    result = []
    for row, token in zip(logits, output):
        z = row / temperature
        order = torch.argsort(z, descending=True).tolist()
        keep = order[:top_k] if top_k > 0 else order
        probs = torch.softmax(z[keep], 0).tolist()
        kept, mass = [], 0.0
        for tok, p in zip(keep, probs):
            if mass >= top_p:
                break
            kept.append(tok)
            mass += p
        assert token in kept, "the server sampled a token outside the top-k/top-p set"
        result.append(float(torch.log_softmax(z[kept], 0)[kept.index(token)]))
    return result


def disk_update(backend, client, addr, path, version):
    """The disk path as the trainer drives it: the backend's updater loads ``path`` as ``version``."""
    return backend.weight_updater(WeightUpdateMeta(type="disk")).push(client, [addr], str(path), version)


def put_back_a(server, models):
    """Serve A again, as the next version (versions only move forward)."""
    backend, addr = server

    async def put_back(client):
        await disk_update(backend, client, addr, models[0], await get_weight_version(client, addr) + 1)

    run(put_back)


def test_greedy_equals_hf_generate_token_by_token(server, hf):
    resps = generate_all(server, [ModelRequest(p, SamplingParams(max_new_tokens=24, temperature=0.0)) for p in PROMPTS])
    for prompt, resp in zip(PROMPTS, resps):
        assert resp.output_ids == hf_greedy(hf["A"], prompt, 24)
        assert resp.finish_reason == ("stop" if len(resp.output_ids) < 24 else "length")


def test_logprobs_equal_teacher_forced_forward(server, hf):
    greedy = generate_all(server, [ModelRequest(p, SamplingParams(max_new_tokens=16, temperature=0.0, ignore_eos=True))
                                   for p in PROMPTS])
    cut = dict(temperature=0.7, top_k=40, top_p=0.9)
    sampled = generate_all(server, [ModelRequest(p, SamplingParams(max_new_tokens=16, ignore_eos=True, seed=i, **cut))
                                    for i, p in enumerate(PROMPTS)])
    for prompt, g, s in zip(PROMPTS, greedy, sampled):
        ref_g = reference_logprobs(hf["A"], prompt, g.output_ids)
        ref_s = reference_logprobs(hf["A"], prompt, s.output_ids, **cut)
        assert max(abs(a - b) for a, b in zip(g.output_logprobs, ref_g)) < 1e-4
        assert max(abs(a - b) for a, b in zip(s.output_logprobs, ref_s)) < 1e-4


def test_seeded_sample_does_not_depend_on_batch_neighbours(server):
    req = ModelRequest(PROMPTS[0], SamplingParams(max_new_tokens=20, temperature=1.0, ignore_eos=True, seed=123))
    alone = generate_all(server, [req])[0]
    others = [ModelRequest(p, SamplingParams(max_new_tokens=30, temperature=1.0, ignore_eos=True)) for p in PROMPTS]
    crowded = generate_all(server, others[:2] + [req] + others[2:])[2]
    assert alone.output_ids == crowded.output_ids


def test_n_samples_share_one_prefill_and_match_single_requests(server, hf):
    """n samples (sharing a prefill) equal separate requests seeded sampling_seed + i."""
    _, addr = server
    params = {"max_new_tokens": 12, "temperature": 1.0, "ignore_eos": True}
    body = {"input_ids": PROMPTS[:3], "return_logprob": True, "sampling_params": {**params, "n": 3, "sampling_seed": 5}}

    async def scenario(client):
        batched = (await client.post(f"http://{addr}/generate", json=body)).json()
        singles = await asyncio.gather(*(client.post(f"http://{addr}/generate", json={
            "input_ids": p, "return_logprob": True, "sampling_params": {**params, "sampling_seed": 5 + i}})
            for p in PROMPTS[:3] for i in range(3)))
        greedy = (await client.post(f"http://{addr}/generate", json={
            "input_ids": PROMPTS[2], "sampling_params": {**params, "temperature": 0.0, "n": 3}})).json()
        return batched, [r.json() for r in singles], greedy

    batched, singles, greedy = run(scenario)
    assert len(batched) == 9
    assert [b["output_ids"] for b in batched] == [s["output_ids"] for s in singles]
    outputs = [tuple(b["output_ids"]) for b in batched[:3]]
    assert len(set(outputs)) == 3, "the n samples of one prompt must differ"
    for b, s in zip(batched, singles):
        lp_b = [t[0] for t in b["meta_info"]["output_token_logprobs"]]
        lp_s = [t[0] for t in s["meta_info"]["output_token_logprobs"]]
        assert max(abs(x - y) for x, y in zip(lp_b, lp_s)) < 1e-4
    assert [g["output_ids"] for g in greedy] == [hf_greedy(hf["A"], PROMPTS[2], 12)] * 3


def test_short_requests_leave_while_a_long_one_runs(server):
    backend, addr = server

    async def scenario(client):
        long = asyncio.create_task(backend.generate(
            client, addr, ModelRequest(PROMPTS[0], SamplingParams(max_new_tokens=1500, temperature=0.0, ignore_eos=True))))
        await asyncio.sleep(0.2)
        shorts = await asyncio.gather(*(backend.generate(
            client, addr, ModelRequest(p, SamplingParams(max_new_tokens=8, temperature=1.0, ignore_eos=True)))
            for p in PROMPTS * 2))
        long_done_then = long.done()
        return shorts, long_done_then, await long

    shorts, long_done_then, long = run(scenario)
    assert all(len(s.output_ids) == 8 for s in shorts)
    assert not long_done_then, "short requests had to wait for the long one"
    assert len(long.output_ids) == 1500


def test_interrupted_generation_resumes_on_new_weights(server, models, hf):
    """Pause mid-generation, load B from disk, resubmit prompt + partial: the continuation is B's."""
    backend, addr = server
    prompt = PROMPTS[2]

    async def scenario(client):
        version = await get_weight_version(client, addr)
        long = asyncio.create_task(backend.generate(
            client, addr, ModelRequest(prompt, SamplingParams(max_new_tokens=1500, temperature=0.0, ignore_eos=True))))
        await asyncio.sleep(0.4)
        await backend.pause(client, addr)
        partial = await long
        await disk_update(backend, client, addr, models[1], version + 1)
        await backend.resume(client, addr)
        rest = await backend.generate(client, addr, ModelRequest(
            prompt + partial.output_ids, SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)))
        return version, partial, rest

    try:
        version, partial, rest = run(scenario)
    finally:
        put_back_a(server, models)
    assert partial.finish_reason == "abort" and 0 < len(partial.output_ids) < 1500
    assert partial.output_ids[:24] == hf_greedy(hf["A"], prompt, 24)[:min(24, len(partial.output_ids))]
    versions = partial.output_versions + rest.output_versions
    assert versions == [version] * len(partial.output_ids) + [version + 1] * 12
    assert rest.output_ids == hf_greedy(hf["B"], prompt + partial.output_ids, 12, eos_token_id=None)


def test_weights_from_gloo_broadcast(server, models, hf):
    """This process acts as trainer rank 0: bucketed broadcast of B's weights to the server."""
    backend, addr = server
    meta = WeightUpdateMeta(type="distributed", master_port=free_port(), group_name="test_sync", bucket_bytes=64 << 10)
    weights_b = hf["B"].state_dict()

    async def scenario(client):
        caster = backend.weight_updater(meta)
        await caster.connect(client, [addr])
        sent = await caster.push(client, [addr], weights_b.items(), 41)
        await caster.close(client)
        resp = await backend.generate(client, addr, ModelRequest(PROMPTS[0], SamplingParams(max_new_tokens=16, temperature=0.0)))
        return sent, resp

    try:
        sent, resp = run(scenario)
    finally:
        put_back_a(server, models)
    assert sent >= sum(p.numel() * 4 for p in hf["B"].parameters())
    assert resp.output_versions[0] == 41
    assert resp.output_ids == hf_greedy(hf["B"], PROMPTS[0], 16)
    assert resp.output_ids != hf_greedy(hf["A"], PROMPTS[0], 16)


@pytest.mark.parametrize("body, message", [
    ({"input_ids": [1, 2], "sampling_params": {"frequency_penalty": 0.5}}, "frequency_penalty"),
    ({"input_ids": [1, 2], "sampling_params": {"max_new_tokens": 2, "no_such": 1}}, "no_such"),
    ({"input_ids": [1, 2], "stream": True}, "stream"),
    ({"input_ids": [1, 99999]}, "input_ids"),
    ({"input_ids": [1] * 5000}, "context"),
    ({"input_ids": [1], "sampling_params": {"top_k": 0}}, "top_k"),
])
def test_bad_requests_get_400_naming_the_field(server, body, message):
    _, addr = server
    resp = run(lambda c: c.post(f"http://{addr}/generate", json=body))
    assert resp.status_code == 400
    assert message in resp.json()["error"]["message"]


def test_server_cli_rejects_a_missing_model(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "areal_embedded.server", "--model", str(tmp_path / "nope"),
                           "--port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "not a Hugging Face model directory" in proc.stderr


def test_client_disconnect_and_abort_request_free_the_batch(server):
    _, addr = server
    long = {"input_ids": PROMPTS[0], "return_logprob": True,
            "sampling_params": {"max_new_tokens": 1800, "temperature": 0.0, "ignore_eos": True}}

    async def scenario(client):
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"http://{addr}/generate", json=long, timeout=0.5)
        for _ in range(30):  # the server notices the disconnect within ~1 s
            if (await client.get(f"http://{addr}/get_server_info")).json()["running"] == 0:
                break
            await asyncio.sleep(0.2)
        freed = (await client.get(f"http://{addr}/get_server_info")).json()["running"] == 0
        task = asyncio.create_task(client.post(f"http://{addr}/generate", json={**long, "rid": "mine"}))
        await asyncio.sleep(0.4)
        await client.post(f"http://{addr}/abort_request", json={"rid": "mine"})
        return freed, (await task).json()

    freed, aborted = run(scenario)
    assert freed
    assert aborted["meta_info"]["finish_reason"]["type"] == "abort"
    assert 0 < len(aborted["output_ids"]) < 1800


def test_sliding_window_model_is_refused(tmp_path):
    """Its masks are full causal attention: a windowed model would be served wrongly."""
    from areal_core.plugin import ArealError
    from areal_core.testing.tiny import make_tiny_model, with_sliding_window
    from areal_embedded.runner import ModelRunner

    model = with_sliding_window(make_tiny_model(tmp_path / "m", arch="qwen3"))
    with pytest.raises(ArealError, match="embedded server cannot run model_type 'qwen3' with sliding-window.*"
                                         "sliding_window=16.*use_sliding_window=false"):
        ModelRunner(str(model), max_rows=2, device="cpu")


def test_model_may_be_a_hub_id_from_the_local_cache(tmp_path, monkeypatch):
    from areal_core.testing.tiny import cache_as_hub_model, make_tiny_model
    from areal_embedded.runner import ModelRunner

    snapshot = cache_as_hub_model(make_tiny_model(tmp_path / "m"), tmp_path / "cache", "tiny-org/tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ModelRunner("tiny-org/tiny", max_rows=2, device="cpu").model_path == str(snapshot)
