"""The inference-backend contract suite: what every ``inference_backend`` component must do.

A plugin's test module subclasses :class:`InferenceBackendContract`::

    import areal_embedded.plugin
    from areal_core.testing.inference_backend import InferenceBackendContract

    class TestEmbeddedBackend(InferenceBackendContract):
        plugin = areal_embedded.plugin
        component_name = "embedded"
        component_config = {"threads": 1, "max_batch": 8}

The suite writes a tiny model (:func:`make_served_model`), builds the backend through the
registry, starts one server per test class with ``backend.server_command(model, host, port)``
as a subprocess on a free port, and drives it only through the backend's protocol methods.
Override the ``served_model`` fixture to serve another model, or ``server`` to attach to a
server started some other way.

Checked: ``server_command`` is an argv; ``health``; generate returns as many logprobs (all <= 0)
and versions as tokens, finish reasons ``length`` and ``stop`` (stop token included as the last
token); greedy output is deterministic; seeded sampling is reproducible; pause aborts an
in-flight request with its partial output, holds new requests, and resume releases them; the
backend's weight updater for each path it supports (``supported_sync_paths``; ``disk`` is
required) loads other weights, which change the output, and sets the version responses report;
an unsupported path is an ArealError naming it; a backend implementing
:class:`~areal_core.api.SupportsWeightsChecksum` reports the served weights' checksum; bad input
raises ``ArealError``. These are exactly the calls ``areal train`` makes on a backend.

Fidelity (the server computes what the weights say, within ``logprob_tolerance``): greedy output
equals transformers' greedy decoding; returned logprobs equal a teacher-forced transformers
forward at the sampling temperature; after a disk update to other weights (tied embeddings, whose
``lm_head`` a reload may miss) both follow the new weights; a generation interrupted by a pause +
weight update through areal's interruptible client keeps its first tokens under the old weights
and continues under the new ones, each token's version and logprob those of the weights that
produced it. With ``adapter`` in ``supported_sync_paths``, a pushed LoRA adapter (and its
in-place replacement) is served exactly as PEFT computes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from areal_core.api.protocols import InferenceBackend, SupportsWeightsChecksum
from areal_core.api.types import ModelRequest, SamplingParams, WeightUpdateMeta
from areal_core.auth import auth_headers
from areal_core.checksum import tensors_checksum
from areal_core.errors import ArealError
from areal_core.launcher.support import free_port
from areal_core.registry import build_registry, get_registry
from areal_core.testing.contract import ComponentContract, run_async
from areal_core.weight_layout import checkpoint_named_parameters

PROMPTS = [[5, 17, 33, 9, 100], [7, 8], [44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54]]


def make_served_model(path: str | Path, size: str = "0.2m", seed: int = 0, weight_std: float = 0.15,
                      arch: str = "qwen2") -> Path:
    """A tiny model whose greedy output varies from token to token.

    ``make_tiny_model``'s initialisation (std 0.02) makes greedy decoding repeat one token
    forever, which would let a broken KV cache pass a greedy-equality test; re-drawing every
    matrix with std ``weight_std`` gives varied, seed-dependent continuations.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from areal_core.testing.tiny import make_tiny_model

    path = Path(make_tiny_model(path, size=size, seed=seed, arch=arch))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:  # matrices, and stacked expert matrices
                param.normal_(0.0, weight_std, generator=generator)
    model.save_pretrained(path)
    return path


def make_lora_adapter(base: str | Path, path: str | Path, seed: int = 0, rank: int = 8, std: float = 0.2) -> Path:
    """A PEFT LoRA adapter on every linear layer of ``base`` whose B matrices are drawn with
    ``std`` (PEFT initialises B to 0, which changes nothing; ``std=0`` keeps that)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, std, generator=generator)
    peft_model.save_pretrained(str(path))
    return Path(path)


class Reference:
    """transformers' view of a model directory (optionally with a PEFT adapter): the numbers a
    backend's output is checked against (fp32)."""

    def __init__(self, model_path: str | Path, adapter: str | Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.eval()

    def logprobs(self, prompt: list[int], output: list[int], temperature: float = 1.0) -> list[float]:
        """log p(output[i] | prompt + output[:i]) under softmax(logits / temperature) (greedy: 1)."""
        import torch

        ids = torch.tensor([list(prompt) + list(output)])
        with torch.no_grad():
            logits = self.model(ids).logits[0, len(prompt) - 1:-1].float()
        scaled = torch.log_softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
        return scaled.gather(1, torch.tensor(output).unsqueeze(1)).squeeze(1).tolist()

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """n tokens, each the argmax of a full transformers forward over prompt + the tokens so far.

        Eos may be chosen and does not stop it, as with a server's ``ignore_eos`` (``generate``
        with ``min_new_tokens`` would forbid eos instead, and differ wherever eos is the argmax)."""
        import torch

        ids = list(prompt)
        with torch.no_grad():
            for _ in range(n):
                ids.append(int(self.model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
        return ids[len(prompt):]


def max_gap(a: list[float], b: list[float]) -> float:
    """max |a_i - b_i| over two equally long, non-empty lists."""
    assert len(a) == len(b) and a, (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))



@contextlib.contextmanager
def serving(backend: InferenceBackend, model_path: str, log_path: str | Path, timeout_s: float = 180.0) -> Iterator[str]:
    """``backend``'s server for ``model_path`` on a free local port (one OpenMP thread) until exit;
    yields its ``host:port``."""
    port = free_port()
    addr = f"127.0.0.1:{port}"
    with launched_server(backend.server_command(model_path, "127.0.0.1", port), addr, timeout_s,
                         {"OMP_NUM_THREADS": "1"}, log_path):
        yield addr


@contextlib.contextmanager
def launched_server(argv: list[str], addr: str, timeout_s: float = 120.0, env: dict[str, str] | None = None,
                    log_path: str | Path | None = None) -> Iterator[subprocess.Popen]:
    """Run ``argv`` until ``GET http://addr/health`` answers 200; terminate it on exit. The health
    check carries the bearer token of ``AREAL_API_KEY`` (from ``env``, else this process's)."""
    import httpx

    from areal_core.auth import API_KEY_ENV

    key = (env or {}).get(API_KEY_ENV) or os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                tail = Path(log_path).read_text()[-3000:] if log_path else "(no log kept)"
                raise RuntimeError(f"server {argv[:4]}... exited with {process.returncode}:\n{tail}")
            try:
                if httpx.get(f"http://{addr}/health", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server at {addr} not healthy after {timeout_s}s")
            time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not isinstance(log, int):  # a file we opened (not DEVNULL)
            log.close()


@dataclass
class RunningServer:
    """A server the suite started: its address, the backend that launched it, the model it serves."""

    addr: str
    backend: Any
    model_path: str


async def _with_client(fn, timeout_s: float = 120.0):
    import httpx

    async with httpx.AsyncClient(timeout=timeout_s, headers=auth_headers()) as client:
        return await fn(client)


def greedy(max_new_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, **kw)


class InferenceBackendContract(ComponentContract):
    """Behaviour every inference backend shares. Subclass and set ``plugin``, ``component_name``
    and ``component_config`` (see the module docstring)."""

    kind = "inference_backend"
    protocol = InferenceBackend

    model_size: ClassVar[str] = "0.2m"
    model_arch: ClassVar[str] = "qwen2"  # a text family of areal_core.testing.tiny.ARCHS (not VL_ARCHS)
    startup_timeout_s: ClassVar[float] = 180.0
    server_env: ClassVar[dict[str, str]] = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    long_generation_tokens: ClassVar[int] = 1500  # still running ~0.5 s after it starts
    supported_sync_paths: ClassVar[tuple[str, ...]] = ("disk",)  # of "disk", "distributed", "adapter"
    logprob_tolerance: ClassVar[float] = 1e-3  # max |logprob - transformers fp32|; set it to what you measured

    @pytest.fixture(scope="class")
    @classmethod
    def served_model(cls, tmp_path_factory) -> str:
        return str(make_served_model(tmp_path_factory.mktemp("served_model"), size=cls.model_size, arch=cls.model_arch))

    @pytest.fixture(scope="class")
    @classmethod
    def other_model(cls, tmp_path_factory) -> str:
        """Same architecture as ``served_model``, other weights (what a weight update loads)."""
        return str(make_served_model(tmp_path_factory.mktemp("other_model"), size=cls.model_size, seed=1,
                                     arch=cls.model_arch))

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, served_model: str, tmp_path_factory) -> Iterator[RunningServer]:
        if cls.plugin is None:
            registry = get_registry()
        else:
            registry = build_registry(extra_plugins=[(cls.plugin, "under test")], entry_points=False)
        backend = registry.create(cls.kind, cls.component_name, dict(cls.component_config))
        port = free_port()
        addr = f"127.0.0.1:{port}"
        argv = backend.server_command(served_model, "127.0.0.1", port)
        log_path = tmp_path_factory.mktemp("server_log") / "server.log"
        with launched_server(argv, addr, cls.startup_timeout_s, cls.server_env, log_path):
            yield RunningServer(addr, backend, served_model)

    def generate(self, server: RunningServer, req: ModelRequest):
        return run_async(_with_client(lambda c: server.backend.generate(c, server.addr, req)))

    # -- the tests ----------------------------------------------------------------------------------

    def test_server_command_is_argv(self, component):
        argv = component.server_command("/models/m", "127.0.0.1", 31234)
        assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)
        assert any("/models/m" in a for a in argv) and any("31234" in a for a in argv)

    def test_health(self, server: RunningServer):
        assert run_async(_with_client(lambda c: server.backend.health(c, server.addr))) is True
        dead = f"127.0.0.1:{free_port()}"
        assert run_async(_with_client(lambda c: server.backend.health(c, dead))) is False

    def test_generate_length_and_logprobs(self, server: RunningServer):
        req = ModelRequest(PROMPTS[0], SamplingParams(max_new_tokens=8, temperature=1.0, ignore_eos=True, seed=1))
        resp = self.generate(server, req)
        assert resp.input_ids == PROMPTS[0]
        assert resp.finish_reason == "length"
        assert len(resp.output_ids) == len(resp.output_logprobs) == len(resp.output_versions) == 8
        assert all(lp <= 1e-6 for lp in resp.output_logprobs)
        assert len(set(resp.output_versions)) == 1 and resp.output_versions[0] >= 0

    def test_stop_token_ends_generation_and_is_returned(self, server: RunningServer):
        first = self.generate(server, ModelRequest(PROMPTS[1], greedy(4, ignore_eos=True))).output_ids
        resp = self.generate(server, ModelRequest(PROMPTS[1], greedy(4, ignore_eos=True, stop_token_ids=[first[1]])))
        assert resp.finish_reason == "stop"
        assert resp.output_ids == first[:2]

    def test_greedy_is_deterministic(self, server: RunningServer):
        async def three(client):
            reqs = [ModelRequest(p, greedy(12, ignore_eos=True)) for p in (PROMPTS[2], PROMPTS[2], PROMPTS[0])]
            return await asyncio.gather(*(server.backend.generate(client, server.addr, r) for r in reqs))

        a, b, _ = run_async(_with_client(three))
        c = self.generate(server, ModelRequest(PROMPTS[2], greedy(12, ignore_eos=True)))
        assert a.output_ids == b.output_ids == c.output_ids
        assert max(abs(x - y) for x, y in zip(a.output_logprobs, c.output_logprobs)) < 1e-4

    def test_seeded_sampling_is_reproducible(self, server: RunningServer):
        params: dict[str, Any] = dict(max_new_tokens=16, temperature=1.0, ignore_eos=True)
        a = self.generate(server, ModelRequest(PROMPTS[0], SamplingParams(seed=7, **params)))
        b = self.generate(server, ModelRequest(PROMPTS[0], SamplingParams(seed=7, **params)))
        c = self.generate(server, ModelRequest(PROMPTS[0], SamplingParams(seed=8, **params)))
        assert a.output_ids == b.output_ids
        assert a.output_ids != c.output_ids

    def test_pause_aborts_in_flight_and_resume_admits_again(self, server: RunningServer):
        n = self.long_generation_tokens
        backend, addr = server.backend, server.addr

        async def scenario(client):
            long = asyncio.create_task(backend.generate(client, addr, ModelRequest(PROMPTS[0], greedy(n, ignore_eos=True))))
            await asyncio.sleep(0.5)
            await backend.pause(client, addr)
            try:
                partial = await asyncio.wait_for(long, 30)
                held = asyncio.create_task(backend.generate(client, addr, ModelRequest(PROMPTS[1], greedy(4, ignore_eos=True))))
                await asyncio.sleep(0.5)
                held_while_paused = not held.done()
            finally:
                await backend.resume(client, addr)
            return partial, held_while_paused, await asyncio.wait_for(held, 60)

        partial, held_while_paused, after = run_async(_with_client(scenario))
        assert partial.finish_reason == "abort"
        assert 0 < len(partial.output_ids) < n, "pause should cut the long generation part-way"
        assert len(partial.output_logprobs) == len(partial.output_ids)
        assert held_while_paused, "a request sent while paused must wait for resume"
        assert after.finish_reason == "length" and len(after.output_ids) == 4

    def push(self, server: RunningServer, meta: WeightUpdateMeta, weights: Any, version: int) -> int:
        """What the trainer does: the backend's updater for ``meta.type``, connect, push, close."""
        updater = server.backend.weight_updater(meta)

        async def go(client):
            await updater.connect(client, [server.addr])
            try:
                return await updater.push(client, [server.addr], weights, version)
            finally:
                await updater.close(client)

        return run_async(_with_client(go))

    @pytest.fixture
    def restore_weights(self, server: RunningServer):
        """Put the served model's own weights back after a test that changed them."""
        yield
        self.push(server, WeightUpdateMeta(type="disk"), server.model_path, self._version_now(server) + 1)

    def _version_now(self, server: RunningServer) -> int:
        return self.generate(server, ModelRequest(PROMPTS[1], greedy(1, ignore_eos=True))).output_versions[0]

    def test_disk_update_loads_new_weights_and_sets_version(self, server: RunningServer, other_model: str):
        req = ModelRequest(PROMPTS[0], greedy(8, ignore_eos=True))
        before = self.generate(server, req)
        version = self._version_now(server) + 1
        try:
            self.push(server, WeightUpdateMeta(type="disk"), other_model, version)
            after = self.generate(server, req)
            assert after.output_versions == [version] * 8
            assert after.output_logprobs != before.output_logprobs, "the update did not change the served weights"
        finally:
            self.push(server, WeightUpdateMeta(type="disk"), server.model_path, version + 1)
        restored = self.generate(server, req)
        assert restored.output_ids == before.output_ids  # the served model's weights again
        assert max(abs(x - y) for x, y in zip(restored.output_logprobs, before.output_logprobs)) < 1e-4

    def test_distributed_update_matches_disk_update(self, server: RunningServer, other_model: str):
        if "distributed" not in self.supported_sync_paths:
            pytest.skip(f"{self.component_name}: no distributed weight path (supported_sync_paths)")
        import torch
        from transformers import AutoModelForCausalLM

        req = ModelRequest(PROMPTS[2], greedy(8, ignore_eos=True))
        version = self._version_now(server) + 1
        self.push(server, WeightUpdateMeta(type="disk"), other_model, version)
        by_disk = self.generate(server, req)
        self.push(server, WeightUpdateMeta(type="disk"), server.model_path, version + 1)
        model = AutoModelForCausalLM.from_pretrained(other_model, dtype=torch.float32)
        meta = WeightUpdateMeta(type="distributed", master_address="127.0.0.1", master_port=free_port(),
                                backend="gloo", bucket_bytes=1 << 16)
        try:
            self.push(server, meta, iter(list(checkpoint_named_parameters(model))), version + 2)
            by_broadcast = self.generate(server, req)
            assert by_broadcast.output_versions == [version + 2] * 8
            assert by_broadcast.output_ids == by_disk.output_ids
            assert max(abs(x - y) for x, y in zip(by_broadcast.output_logprobs, by_disk.output_logprobs)) < 1e-4
        finally:
            self.push(server, WeightUpdateMeta(type="disk"), server.model_path, version + 3)

    def test_unsupported_sync_path_is_a_clear_error(self, component):
        for path in ("disk", "distributed", "adapter"):
            if path not in self.supported_sync_paths:
                with pytest.raises(ArealError, match=path):
                    component.weight_updater(WeightUpdateMeta(type=path, master_port=1))

    def test_weights_checksum_when_supported(self, server: RunningServer):
        if not isinstance(server.backend, SupportsWeightsChecksum):
            pytest.skip(f"{self.component_name}: no weights_checksum (optional capability)")
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(server.model_path, dtype=torch.float32)
        theirs = run_async(_with_client(lambda c: server.backend.weights_checksum(c, server.addr)))
        assert theirs == tensors_checksum(checkpoint_named_parameters(model))

    def test_bad_input_raises_areal_error(self, server: RunningServer):
        with pytest.raises(ArealError):
            self.generate(server, ModelRequest([], greedy(4)))
        with pytest.raises(ArealError, match="top_p"):
            self.generate(server, ModelRequest(PROMPTS[0], SamplingParams(max_new_tokens=4, top_p=0.0)))
        with pytest.raises(ArealError):
            self.push(server, WeightUpdateMeta(type="disk"), str(Path(server.model_path) / "no_such_dir"),
                      self._version_now(server) + 1)

    # -- fidelity: the server computes what the weights say -----------------------------------------

    def test_greedy_equals_transformers_greedy(self, server: RunningServer):
        ref = Reference(server.model_path)
        for prompt in PROMPTS:
            resp = self.generate(server, ModelRequest(prompt, greedy(16, ignore_eos=True)))
            assert resp.output_ids == ref.greedy(prompt, 16)
            assert max_gap(resp.output_logprobs, ref.logprobs(prompt, resp.output_ids)) < self.logprob_tolerance

    @pytest.mark.parametrize("temperature", [1.0, 0.7])
    def test_logprobs_equal_teacher_forced_forward(self, server: RunningServer, temperature: float):
        ref = Reference(server.model_path)
        for i, prompt in enumerate(PROMPTS):
            params = SamplingParams(max_new_tokens=24, temperature=temperature, ignore_eos=True, seed=11 + i)
            resp = self.generate(server, ModelRequest(prompt, params))
            gap = max_gap(resp.output_logprobs, ref.logprobs(prompt, resp.output_ids, temperature))
            assert gap < self.logprob_tolerance, f"max |logprob - transformers| = {gap:.2e} at T={temperature}"

    def test_logprobs_after_update_follow_new_weights(self, server: RunningServer, other_model: str, restore_weights):
        """Catches a part of the model a reload leaves stale (e.g. a tied lm_head)."""
        version = self._version_now(server) + 1
        self.push(server, WeightUpdateMeta(type="disk"), other_model, version)
        new = Reference(other_model)
        for prompt in PROMPTS:
            resp = self.generate(server, ModelRequest(prompt, greedy(12, ignore_eos=True)))
            assert resp.output_versions == [version] * 12
            assert resp.output_ids == new.greedy(prompt, 12)
            assert max_gap(resp.output_logprobs, new.logprobs(prompt, resp.output_ids)) < self.logprob_tolerance

    def test_interrupted_generation_continues_under_new_weights(self, server: RunningServer, other_model: str,
                                                              restore_weights):
        """areal's interruptible client across a pause + weight update: per-token versions, each
        token's logprob from the weights that produced it."""
        from areal_core.api.types import WeightVersion
        from areal_core.rollout.client import RolloutClient

        n = self.long_generation_tokens
        old = self._version_now(server)

        async def scenario():  # what the trainer does between two steps
            version = WeightVersion(old)
            rollout = RolloutClient(server.backend, [server.addr], weight_version=version)
            updater = server.backend.weight_updater(WeightUpdateMeta(type="disk"))
            try:
                await updater.connect(rollout.http, [server.addr])
                task = asyncio.create_task(rollout.agenerate(ModelRequest(PROMPTS[0], greedy(n, ignore_eos=True))))
                await asyncio.sleep(0.5)
                await rollout.pause()
                await rollout.push_weights(updater, other_model, old + 1)
                version.set(old + 1)
                await rollout.resume()
                return await asyncio.wait_for(task, 300)
            finally:
                await rollout.close_updater(updater)
                await rollout.aclose()

        resp = run_async(scenario())
        assert resp.finish_reason == "length" and len(resp.output_ids) == n and resp.n_interruptions >= 1
        k = resp.output_versions.index(old + 1)
        assert 0 < k and resp.output_versions == [old] * k + [old + 1] * (n - k)
        prompt, out = PROMPTS[0], resp.output_ids
        assert max_gap(resp.output_logprobs[:k], Reference(server.model_path).logprobs(prompt, out[:k])) \
            < self.logprob_tolerance
        assert max_gap(resp.output_logprobs[k:], Reference(other_model).logprobs(prompt + out[:k], out[k:])) \
            < self.logprob_tolerance

    def test_adapter_changes_outputs_as_peft_says(self, server: RunningServer, tmp_path):
        if "adapter" not in self.supported_sync_paths:
            pytest.skip(f"{self.component_name}: no adapter weight path (supported_sync_paths)")
        version = self._version_now(server)
        base_ids = self.generate(server, ModelRequest(PROMPTS[2], greedy(12, ignore_eos=True))).output_ids
        for seed in (1, 2):  # load, then replace in place
            adapter = make_lora_adapter(server.model_path, tmp_path / f"adapter{seed}", seed=seed)
            version += 1
            sent = self.push(server, WeightUpdateMeta(type="adapter"), str(adapter), version)
            assert sent == sum(f.stat().st_size for f in adapter.glob("*.safetensors"))
            ref = Reference(server.model_path, adapter)
            for prompt in PROMPTS:
                resp = self.generate(server, ModelRequest(prompt, greedy(12, ignore_eos=True)))
                assert resp.output_versions == [version] * 12
                assert resp.output_ids == ref.greedy(prompt, 12)
                assert max_gap(resp.output_logprobs, ref.logprobs(prompt, resp.output_ids)) < self.logprob_tolerance
        adapted = self.generate(server, ModelRequest(PROMPTS[2], greedy(12, ignore_eos=True))).output_ids
        assert adapted != base_ids, "the adapter should change the greedy continuation"
        # an adapter with B = 0 adds nothing: the base model's outputs come back (and later tests see them)
        zero = make_lora_adapter(server.model_path, tmp_path / "zero", std=0.0)
        self.push(server, WeightUpdateMeta(type="adapter"), str(zero), version + 1)
        assert self.generate(server, ModelRequest(PROMPTS[2], greedy(12, ignore_eos=True))).output_ids == base_ids
