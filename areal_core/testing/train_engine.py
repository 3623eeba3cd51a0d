"""The train-engine contract suite: what every ``train_engine`` component must do.

A plugin's test module subclasses :class:`TrainEngineContract`::

    import areal_fsdp.plugin
    from areal_core.testing.train_engine import TrainEngineContract

    class TestFSDPEngine(TrainEngineContract):
        plugin = areal_fsdp.plugin
        component_name = "fsdp"
        component_config = {"optimizer": {"lr": 1e-2}, "max_tokens_per_mb": 64}

The engine is built through the registry with ``factory(config, run=run_context)``, the run
context a real :class:`~areal_core.api.RunContext` (:func:`areal_core.testing.engines.run_context`)
carrying ``model_path`` (a tiny HF model written by the suite), ``seed``, ``total_steps`` and the
trainer-owned weight version. Configure the engine in float32 with a large learning rate (~1e-2) so that a
few steps visibly reduce the loss. Every test uses one process (world size 1); multi-rank
equivalence belongs in the plugin's own tests.

Checked: forward shapes and zeros at sequence starts; packed logprobs (with a temperature) equal
an unpacked Hugging Face forward of each sequence; train_batch's loss is the global token mean
and decreases; the engine keeps its run context and never moves the weight version; save → load → continue equals uninterrupted training;
export_hf loads with ``AutoModelForCausalLM`` and reproduces the engine's logprobs;
``named_full_weights`` yields the exported weights under the saved files' names; with its default
``device: auto`` the engine computes on the run's :class:`~areal_core.api.Device` (``run.device``)
and takes the rank's torch device, its RNG state (saved and restored by checkpoints) and cache
release from it (a recording CPU device stands in for an accelerator plugin). Set ``tiny_arch``
to run the suite on another model family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from areal_core.api.protocols import TrainEngine
from areal_core.api.types import RunContext
from areal_core.data.batch import SequenceBatch
from areal_core.devices import CPUDevice
from areal_core.errors import ArealError
from areal_core.testing.contract import ComponentContract
from areal_core.testing.engines import run_context


class RecordingCPUDevice(CPUDevice):
    """The cpu device, recording which Device methods an engine called (``calls``)."""

    def __init__(self):
        super().__init__()
        self.calls: set[str] = set()

    def torch_device(self, local_rank: int):
        self.calls.add("torch_device")
        return super().torch_device(local_rank)

    def rng_state(self):
        self.calls.add("rng_state")
        return {"recorded": True}

    def set_rng_state(self, state) -> None:
        assert state == {"recorded": True}, f"set_rng_state got {state!r}, not what rng_state returned"
        self.calls.add("set_rng_state")

    def empty_cache(self) -> None:
        self.calls.add("empty_cache")


def random_batch(lengths: list[int], prompt_len: int = 3, vocab: int = 500, seed: int = 0) -> SequenceBatch:
    """A packed batch of random tokens: the first ``prompt_len`` tokens of each sequence have
    ``loss_mask`` 0, the rest 1."""
    g = torch.Generator().manual_seed(seed)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.long)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    mask = torch.cat([(torch.arange(n) >= min(prompt_len, n - 1)).float() for n in lengths])
    return SequenceBatch(cu, {"input_ids": torch.randint(0, vocab, (int(cu[-1]),), generator=g), "loss_mask": mask},
                         {"rewards": torch.zeros(len(lengths))})


def nll_loss(logprobs: torch.Tensor, entropy: torch.Tensor, mb: SequenceBatch):
    """Summed negative log-likelihood of the loss-masked tokens (a LossFn)."""
    mask = mb["loss_mask"]
    return -(logprobs * mask).sum(), {"entropy": float((entropy.detach() * mask).sum() / mask.sum().clamp(min=1))}


def mask_count(mb: SequenceBatch) -> float:
    """Loss weight: the number of loss-masked tokens (a LossWeightFn)."""
    return float(mb["loss_mask"].sum())


def hf_logprobs(model_path: str, batch: SequenceBatch, temperature: float = 1.0) -> torch.Tensor:
    """Reference: each sequence alone through ``AutoModelForCausalLM`` (no packing). [T]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for i in range(batch.num_seqs):
            ids = batch["input_ids"][batch.cu_seqlens[i]:batch.cu_seqlens[i + 1]]
            logp = torch.log_softmax(model(ids[None]).logits[0].float() / temperature, -1)
            seq = torch.zeros(ids.numel())
            seq[1:] = logp[:-1].gather(-1, ids[1:, None])[:, 0]
            out.append(seq)
    return torch.cat(out)


class TrainEngineContract(ComponentContract):
    """Behaviour every train engine shares. Subclass and set ``plugin``, ``component_name`` and
    ``component_config`` (see the module docstring)."""

    kind: ClassVar[str] = "train_engine"
    protocol: ClassVar[type] = TrainEngine

    tiny_size: ClassVar[str] = "0.2m"
    tiny_arch: ClassVar[str] = "qwen2"  # a text family of areal_core.testing.tiny.ARCHS (not VL_ARCHS)
    logprob_atol: ClassVar[float] = 1e-5  # packed vs unpacked forward, float32
    resume_atol: ClassVar[float] = 1e-6  # save -> load -> continue vs uninterrupted

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def model_path(cls, tmp_path_factory) -> str:
        from areal_core.testing.tiny import make_tiny_model

        return str(make_tiny_model(tmp_path_factory.mktemp("tiny_model"), size=cls.tiny_size, arch=cls.tiny_arch))

    @pytest.fixture
    def run_context(self, model_path: str) -> RunContext:
        return run_context(model_path)

    @pytest.fixture
    def dependencies(self, run_context) -> dict[str, Any]:
        return {"run": run_context}

    @pytest.fixture
    def make_engine(self, record, config, dependencies):
        """Call it to get a new initialized engine (destroyed after the test)."""
        engines = []

        def make():
            engine = record.load_factory()(config, **dependencies)
            engine.initialize()
            engines.append(engine)
            return engine

        yield make
        for engine in reversed(engines):
            engine.destroy()

    @pytest.fixture
    def engine(self, make_engine):
        return make_engine()

    @pytest.fixture
    def batch(self) -> SequenceBatch:
        return random_batch([7, 20, 4, 33, 12, 2], seed=0)

    # -- forward ------------------------------------------------------------------------------

    def test_forward_shape_and_zero_at_sequence_starts(self, engine, batch):
        out = engine.forward(batch)
        assert out.shape == (batch.num_tokens,)
        assert out.dtype == torch.float32
        assert torch.all(out[batch.cu_seqlens[:-1]] == 0)
        inner = torch.ones(batch.num_tokens, dtype=torch.bool)
        inner[batch.cu_seqlens[:-1]] = False
        assert torch.all(out[inner] < 0), "logprobs of non-first tokens must be negative"

    @pytest.mark.parametrize("temperature", [1.0, 0.7])
    def test_packed_logprobs_match_unpacked_hf_forward(self, engine, batch, model_path, temperature):
        out = engine.forward(batch, temperature=temperature)
        ref = hf_logprobs(model_path, batch, temperature)
        torch.testing.assert_close(out, ref, atol=self.logprob_atol, rtol=0)

    # -- training -----------------------------------------------------------------------------

    def test_train_batch_loss_is_global_token_mean_and_decreases(self, engine, batch):
        before = engine.forward(batch)
        expected = float(-(before * batch["loss_mask"]).sum() / batch["loss_mask"].sum())
        losses = []
        for _ in range(4):
            stats = engine.train_batch(batch, nll_loss, mask_count)
            assert {"loss", "grad_norm", "lr"} <= stats.keys()
            assert all(isinstance(v, float) for v in stats.values()), stats
            losses.append(stats["loss"])
        assert losses[0] == pytest.approx(expected, abs=1e-4)
        assert losses[-1] < losses[0] - 0.05, losses
        assert stats["grad_norm"] > 0 and stats["entropy"] > 0

    def test_engine_reads_but_never_moves_the_weight_version(self, engine, run_context, batch):
        assert engine.run is run_context, "the engine must keep the RunContext its factory was given as .run"
        run_context.weight_version.set(4)  # the trainer's
        engine.train_batch(batch, nll_loss, mask_count)
        engine.train_batch(batch, nll_loss, mask_count)
        assert engine.run.weight_version.value == 4, "only the trainer sets the weight version"

    def test_save_load_continue_equals_uninterrupted(self, make_engine, batch, tmp_path):
        other = random_batch([9, 15, 5], seed=1)
        first = make_engine()
        first.train_batch(batch, nll_loss, mask_count)
        first.save(str(tmp_path / "ckpt"))
        for b in (other, batch):
            first.train_batch(b, nll_loss, mask_count)
        resumed = make_engine()
        resumed.load(str(tmp_path / "ckpt"))
        for b in (other, batch):
            resumed.train_batch(b, nll_loss, mask_count)
        torch.testing.assert_close(resumed.forward(batch), first.forward(batch), atol=self.resume_atol, rtol=0)

    def test_engine_computes_on_the_run_device(self, record, config, model_path, batch, tmp_path):
        device = RecordingCPUDevice()
        engine = record.load_factory()(config, run=run_context(model_path, device=device))
        engine.initialize()
        try:
            engine.train_batch(batch, nll_loss, mask_count)
            engine.save(str(tmp_path / "ckpt"))
            engine.load(str(tmp_path / "ckpt"))
            assert engine.forward(batch).device.type == "cpu"
        finally:
            engine.destroy()
        missing = {"torch_device", "rng_state", "set_rng_state", "empty_cache"} - device.calls
        assert not missing, f"the engine did not use the run's Device for {sorted(missing)} (device-specific code?)"

    def test_load_of_a_non_checkpoint_is_a_clear_error(self, engine, tmp_path):
        with pytest.raises(ArealError):
            engine.load(str(tmp_path / "nothing_here"))

    # -- export -------------------------------------------------------------------------------

    def test_export_hf_loads_with_auto_model_and_matches(self, engine, batch, tmp_path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        engine.train_batch(batch, nll_loss, mask_count)
        before = engine.forward(batch)
        engine.export_hf(str(tmp_path / "hf"))
        torch.testing.assert_close(engine.forward(batch), before, atol=0, rtol=0, msg="export_hf changed the engine")
        assert list((tmp_path / "hf").glob("*.safetensors")), "export_hf must write safetensors"
        AutoModelForCausalLM.from_pretrained(tmp_path / "hf")  # loads without error
        AutoTokenizer.from_pretrained(tmp_path / "hf")
        torch.testing.assert_close(hf_logprobs(str(tmp_path / "hf"), batch), engine.forward(batch),
                                   atol=self.logprob_atol, rtol=0)

    def test_named_full_weights_are_the_exported_weights(self, engine, batch, tmp_path):
        from safetensors.torch import load_file

        engine.train_batch(batch, nll_loss, mask_count)
        engine.export_hf(str(tmp_path / "hf"))
        exported = {k: v for f in sorted((tmp_path / "hf").glob("*.safetensors")) for k, v in load_file(f).items()}
        weights = dict(engine.named_full_weights())
        assert weights, "named_full_weights yielded nothing on rank 0"
        assert set(weights) == set(exported), ("named_full_weights must yield the names of the saved files: "
                                               f"{sorted(set(weights) ^ set(exported))[:4]}")
        for name, tensor in weights.items():
            torch.testing.assert_close(tensor.float().cpu(), exported[name].float(), atol=1e-6, rtol=0)
