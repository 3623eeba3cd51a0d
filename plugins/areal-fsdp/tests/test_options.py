"""Engine options: critic mode, mixed precision, gradient checkpointing, LR schedules,
atomic checkpoints, and clear errors for bad configuration."""

import pytest
import torch

from areal_core.config.base import validate_section
from areal_core.errors import ArealError
from areal_core.testing.tiny import make_tiny_model
from areal_core.testing.train_engine import mask_count, nll_loss, random_batch
from areal_fsdp.config import FSDPEngineConfig, OptimizerConfig
from areal_fsdp.engine import FSDPEngine
from areal_fsdp.schedule import lr_multiplier


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("model")))


@pytest.fixture
def make(model_path):
    engines = []

    def build(**overrides):
        engine = FSDPEngine(FSDPEngineConfig(path=model_path, **overrides))
        engine.initialize()
        engines.append(engine)
        return engine

    yield build
    for e in engines:
        e.destroy()


def value_loss(values, entropy, mb):
    assert entropy is None  # a critic has no token distribution
    target = mb["rewards"][mb.seq_index]
    return (((values - target) ** 2) * mb["loss_mask"]).sum(), {}


def test_critic_returns_values_and_fits_them(make, tmp_path, recwarn):
    from transformers import AutoModelForTokenClassification

    engine = make(critic=True, optimizer={"lr": 1e-2})
    batch = random_batch([6, 11, 4], seed=0)
    batch.seqs["rewards"] = torch.tensor([1.0, -1.0, 0.5])
    values = engine.forward(batch)
    assert values.shape == (batch.num_tokens,) and values.dtype == torch.float32
    losses = [engine.train_batch(batch, value_loss, mask_count)["loss"] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert not [w for w in recwarn if "view tensor" in str(w.message)]  # the value head's output is copied
    engine.export_hf(str(tmp_path / "critic"))
    exported = AutoModelForTokenClassification.from_pretrained(tmp_path / "critic")
    with torch.no_grad():
        ref = exported(batch["input_ids"][None, :6]).logits[0, :, 0]
    torch.testing.assert_close(engine.forward(batch)[:6], ref, atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_step(make):
    batch = random_batch([9, 20, 5], seed=0)
    plain, ckpt = make(), make(gradient_checkpointing=True)
    s1, s2 = plain.train_batch(batch, nll_loss, mask_count), ckpt.train_batch(batch, nll_loss, mask_count)
    assert s2["grad_norm"] == pytest.approx(s1["grad_norm"], rel=1e-5)
    torch.testing.assert_close(ckpt.forward(batch), plain.forward(batch), atol=1e-6, rtol=0)


def test_bf16_mixed_precision_trains_close_to_fp32(make):
    batch = random_batch([9, 20, 5], seed=0)
    fp32, bf16 = make(optimizer={"lr": 1e-2}), make(mixed_precision=True, optimizer={"lr": 1e-2})
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters()), "master weights stay float32"
    l32 = [fp32.train_batch(batch, nll_loss, mask_count)["loss"] for _ in range(3)]
    l16 = [bf16.train_batch(batch, nll_loss, mask_count)["loss"] for _ in range(3)]
    assert l16[-1] < l16[0]
    assert l16 == pytest.approx(l32, abs=0.05)


def test_lr_warmup_then_cosine_reported_per_step(make):
    engine = make(optimizer={"lr": 1e-2, "warmup_steps": 2, "lr_scheduler": "cosine", "total_steps": 6})
    batch = random_batch([5, 7], seed=0)
    lrs = [engine.train_batch(batch, nll_loss, mask_count)["lr"] for _ in range(6)]
    # warmup (s+1)/(W+1): 1/3, 2/3; then cosine over 4 steps: f = 0, 1/4, 2/4, 3/4 -> 1, .854, .5, .146
    expected = [1 / 3, 2 / 3, 1.0, 0.5 * (1 + 2 ** -0.5), 0.5, 0.5 * (1 - 2 ** -0.5)]
    assert lrs == pytest.approx([1e-2 * m for m in expected])


def test_linear_schedule_reaches_min_lr():
    cfg = OptimizerConfig(lr_scheduler="linear", min_lr_ratio=0.1, total_steps=10)
    assert lr_multiplier(0, cfg, 10) == 1.0
    assert lr_multiplier(5, cfg, 10) == pytest.approx(0.55)  # 0.1 + 0.9 * (1 - 5/10)
    assert lr_multiplier(10, cfg, 10) == pytest.approx(0.1)


def test_gradient_clipping_reports_the_unclipped_norm(make):
    batch = random_batch([9, 20, 5], seed=0)
    free, clipped = make(optimizer={"gradient_clipping": None}), make(optimizer={"gradient_clipping": 1e-3})
    s1, s2 = free.train_batch(batch, nll_loss, mask_count), clipped.train_batch(batch, nll_loss, mask_count)
    assert s1["grad_norm"] == pytest.approx(s2["grad_norm"], rel=1e-6) and s1["grad_norm"] > 1e-3


def test_failed_save_leaves_the_previous_checkpoint(make, tmp_path, monkeypatch):
    import areal_fsdp.engine as engine_module

    engine = make(optimizer={"lr": 1e-2})
    batch = random_batch([5, 7], seed=0)
    engine.train_batch(batch, nll_loss, mask_count)
    engine.save(str(tmp_path / "ckpt"))
    saved = engine.forward(batch)
    engine.train_batch(batch, nll_loss, mask_count)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(engine_module.dcp, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        engine.save(str(tmp_path / "ckpt"))
    monkeypatch.undo()
    fresh = make()
    fresh.load(str(tmp_path / "ckpt"))
    torch.testing.assert_close(fresh.forward(batch), saved, atol=0, rtol=0)


def test_config_errors_name_the_field(model_path):
    with pytest.raises(ArealError, match=r"actor\.optimizer\.lr"):
        validate_section(FSDPEngineConfig, {"name": "fsdp", "optimizer": {"lr": -1}}, path="actor")
    with pytest.raises(ArealError, match="lora"):
        validate_section(FSDPEngineConfig, {"name": "fsdp", "critic": True, "lora": {"enabled": True}}, path="actor")
    with pytest.raises(ArealError, match="total_steps"):
        FSDPEngine(FSDPEngineConfig(path=model_path, optimizer={"lr_scheduler": "cosine"})).initialize()
    with pytest.raises(ArealError, match="not a Hugging Face model directory"):
        FSDPEngine(FSDPEngineConfig(path=str(model_path) + "_missing")).initialize()
    import torch.distributed as dist

    assert not dist.is_initialized(), "a failed initialize must not leave a process group behind"


def test_run_context_supplies_path_seed_and_total_steps(model_path):
    from areal_core.testing.engines import run_context

    run = run_context(model_path, seed=3, total_steps=5)
    engine = FSDPEngine(FSDPEngineConfig(optimizer={"lr_scheduler": "linear"}), run)
    engine.initialize()
    try:
        assert engine.model_path == model_path
    finally:
        engine.destroy()


def test_torchrun_environment_initialises_the_group(model_path, monkeypatch):
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    engine = FSDPEngine(FSDPEngineConfig(path=model_path))
    engine.initialize()
    assert dist.is_initialized() and dist.get_world_size() == 1
    engine.destroy()
    assert not dist.is_initialized(), "the engine created the group, so it destroys it"


def test_batch_without_loss_tokens_leaves_the_weights(make):
    engine = make(optimizer={"lr": 1e-2})
    batch = random_batch([6, 9], seed=0)
    engine.train_batch(batch, nll_loss, mask_count)  # momentum is now non-zero
    before = engine.forward(batch)
    batch.tokens["loss_mask"] = torch.zeros_like(batch["loss_mask"])
    stats = engine.train_batch(batch, nll_loss, mask_count)
    assert stats["update_skipped"] == 1.0 and stats["loss"] == 0.0
    torch.testing.assert_close(engine.forward(batch), before, atol=0, rtol=0)


def test_sliding_window_model_is_refused_by_varlen_attention(tmp_path):
    from areal_core.testing.tiny import with_sliding_window

    model = with_sliding_window(make_tiny_model(tmp_path / "m", arch="qwen3"))
    engine = FSDPEngine(FSDPEngineConfig(path=str(model)))
    with pytest.raises(ArealError, match="areal_varlen_sdpa.*sliding-window.*sliding_window=16"):
        engine.initialize()
    assert engine.dist is None  # no process group left behind


def test_path_may_be_a_hub_id_from_the_local_cache(tmp_path, monkeypatch, model_path):
    from areal_core.testing.tiny import cache_as_hub_model

    snapshot = cache_as_hub_model(model_path, tmp_path / "cache", "tiny-org/tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = FSDPEngine(FSDPEngineConfig(path="tiny-org/tiny"))
    engine.initialize()
    try:
        assert engine.model_path == str(snapshot)
    finally:
        engine.destroy()
    with pytest.raises(ArealError, match="'tiny-org/other' is not in the cache"):
        FSDPEngine(FSDPEngineConfig(path="tiny-org/other")).initialize()
