"""LoRA through peft: only adapters train; export writes merged weights or the adapter."""

import pytest
import torch

from areal_core.testing.tiny import make_tiny_model
from areal_core.testing.train_engine import hf_logprobs, mask_count, nll_loss, random_batch
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("model")))


@pytest.fixture
def make(model_path):
    engines = []

    def build(export="merged"):
        engine = FSDPEngine(FSDPEngineConfig(path=model_path, optimizer={"lr": 1e-2},
                                             lora={"enabled": True, "r": 4, "alpha": 8, "export": export}))
        engine.initialize()
        engines.append(engine)
        return engine

    yield build
    for e in engines:
        e.destroy()


def full(engine):
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in engine.model.named_parameters()}


def test_only_adapters_train(make):
    engine = make()
    trainable = [n for n, p in engine.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = full(engine)
    batch = random_batch([9, 14, 6], seed=0)
    losses = [engine.train_batch(batch, nll_loss, mask_count)["loss"] for _ in range(3)]
    after = full(engine)
    assert losses[-1] < losses[0]
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed), "B starts at zero; training must move it"


def test_export_merged_reproduces_the_adapted_model(make, tmp_path):
    engine = make("merged")
    batch = random_batch([9, 14, 6], seed=0)
    for _ in range(2):
        engine.train_batch(batch, nll_loss, mask_count)
    engine.export_hf(str(tmp_path / "merged"))
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    torch.testing.assert_close(hf_logprobs(str(tmp_path / "merged"), batch), engine.forward(batch), atol=1e-5, rtol=0)
    weights = dict(engine.named_full_weights())
    assert not any("lora" in n for n in weights)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "merged" / "model.safetensors")
    for name, tensor in weights.items():
        if name in saved:
            torch.testing.assert_close(tensor, saved[name], atol=1e-6, rtol=0)


def test_export_adapter_loads_with_peft(make, model_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine = make("adapter")
    batch = random_batch([9, 14, 6], seed=0)
    engine.train_batch(batch, nll_loss, mask_count)
    engine.export_hf(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), tmp_path / "adapter")
    ids = batch["input_ids"][:9]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None]).logits[0], -1)[:-1].gather(-1, ids[1:, None])[:, 0]
    torch.testing.assert_close(logp, engine.forward(batch)[1:9], atol=1e-5, rtol=0)


def test_export_adapter_writes_only_the_adapter(make, model_path, tmp_path):
    """``export_adapter`` (SupportsAdapterExport): the PEFT adapter alone, whatever ``lora.export``
    says, a small fraction of the full model's bytes, reproducing the engine's logprobs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from areal_core.plugin import SupportsAdapterExport

    engine = make("merged")
    assert isinstance(engine, SupportsAdapterExport)
    batch = random_batch([9, 14, 6], seed=0)
    engine.train_batch(batch, nll_loss, mask_count)
    engine.export_adapter(str(tmp_path / "adapter"))
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not any(f.startswith("model") for f in files), files  # no base weights
    engine.export_hf(str(tmp_path / "full"))
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (tmp_path / "full" / "model.safetensors").stat().st_size / 2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_path), tmp_path / "adapter")
    ids = batch["input_ids"][:9]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None]).logits[0], -1)[:-1].gather(-1, ids[1:, None])[:, 0]
    torch.testing.assert_close(logp, engine.forward(batch)[1:9], atol=1e-5, rtol=0)


def test_export_adapter_without_lora_is_an_error(model_path, tmp_path):
    from areal_core.plugin import ArealError

    engine = FSDPEngine(FSDPEngineConfig(path=model_path))
    engine.initialize()
    try:
        with pytest.raises(ArealError, match="lora.enabled"):
            engine.export_adapter(str(tmp_path / "adapter"))
    finally:
        engine.destroy()
