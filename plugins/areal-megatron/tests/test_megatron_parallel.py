"""2 gloo ranks against one: tensor parallel (t=2), pipeline parallel (p=2, 1F1B), data
parallel (d=2) and, for Qwen3-MoE, expert parallel (e=2, allgather dispatcher) give the
single-rank logprobs, loss, gradient norm and gradients (full, in HF names, streamed in small
buckets); a checkpoint saved at t=2 loads at t=1 and at t=2 and continues identically, one
saved at e=2 loads at e=1."""

import pytest
import torch

from _megatron_models import make_model
from _megatron_ranks import run_ranks
from areal_core.testing.engines import make_train_engine, run_context
from areal_core.testing.train_engine import mask_count, nll_loss, random_batch

pytestmark = pytest.mark.timeout(600)
CONFIG = {"optimizer": {"lr": 1e-2}, "max_tokens_per_mb": 40, "weight_bucket_bytes": 100_000}  # several buckets


def batch():
    return random_batch([7, 20, 4, 33, 12, 2, 9], seed=0)


def step_and_record(engine) -> dict:
    """forward → one train_batch (gradients captured before the optimizer step) → forward."""
    out = {"before": engine.forward(batch())}
    grads: dict = {}
    step = engine.optimizer.step

    def capture():
        grads.update((k, v.clone()) for k, v in engine.gathered_hf(lambda p: p.grad))
        step()

    engine.optimizer.step = capture
    stats = engine.train_batch(batch(), nll_loss, mask_count)
    engine.optimizer.step = step
    out.update(loss=stats["loss"], grad_norm=stats["grad_norm"], grads=grads, after=engine.forward(batch()))
    return out


def _worker(rank, model_dir, layout, out_path):
    engine = make_train_engine("megatron", {**CONFIG, **layout}, run_context(model_dir))
    try:
        record = step_and_record(engine)
    finally:
        engine.destroy()
    if rank == 0:
        torch.save(record, out_path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("qwen2"), "qwen2_tied", layers=2)


def one_rank(model_dir) -> dict:
    engine = make_train_engine("megatron", CONFIG, run_context(model_dir))
    try:
        return step_and_record(engine)
    finally:
        engine.destroy()


@pytest.fixture(scope="module")
def single(model_dir):
    return one_rank(model_dir)


@pytest.mark.parametrize("layout", [{"tensor_parallel": 2}, {"pipeline_parallel": 2}, {}],
                         ids=["tp2", "pp2", "dp2"])
def test_two_ranks_equal_one(model_dir, single, layout, tmp_path):
    assert_two_ranks_equal(model_dir, single, layout, tmp_path)


def test_expert_parallel_two_ranks_equal_one(tmp_path):
    """Qwen3-MoE (4 experts, top 2): e=2 (2 experts per rank, tokens exchanged by the allgather
    dispatcher, micro-batches of one shape on both ranks) = one rank with all 4 experts."""
    from areal_core.testing.tiny import make_tiny_model

    moe_dir = make_tiny_model(tmp_path / "moe", arch="qwen3_moe")
    assert_two_ranks_equal(moe_dir, one_rank(moe_dir), {"expert_parallel": 2}, tmp_path)


def assert_two_ranks_equal(model_dir, single, layout, tmp_path):
    run_ranks(_worker, 2, str(model_dir), layout, tmp_path / "rank0.pt")
    got = torch.load(tmp_path / "rank0.pt", weights_only=False)
    torch.testing.assert_close(got["before"], single["before"], atol=1e-6, rtol=0)
    assert got["loss"] == pytest.approx(single["loss"], abs=1e-6)
    assert got["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-5)
    assert got["grads"].keys() == single["grads"].keys()
    for name, grad in single["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, atol=1e-6, rtol=1e-4, msg=name)
    torch.testing.assert_close(got["after"], single["after"], atol=1e-5, rtol=0)


def save_then_continue(layout: dict, model_dir, ckpt: str) -> torch.Tensor:
    """One step, save, one more step: the logprobs after it."""
    engine = make_train_engine("megatron", {**CONFIG, **layout}, run_context(model_dir))
    try:
        engine.train_batch(batch(), nll_loss, mask_count)
        engine.save(ckpt)
        engine.train_batch(batch(), nll_loss, mask_count)
        return engine.forward(batch())
    finally:
        engine.destroy()


def load_then_step(layout: dict, model_dir, ckpt: str) -> torch.Tensor:
    """Load ``ckpt``, one step: the logprobs after it (what save_then_continue saw)."""
    engine = make_train_engine("megatron", {**CONFIG, **layout}, run_context(model_dir))
    try:
        engine.load(ckpt)
        engine.train_batch(batch(), nll_loss, mask_count)
        return engine.forward(batch())
    finally:
        engine.destroy()


def _save_at_tp2_then_load_at_tp2(rank, model_dir, ckpt, out_path):
    continued = save_then_continue({"tensor_parallel": 2}, model_dir, ckpt)
    resumed = load_then_step({"tensor_parallel": 2}, model_dir, ckpt)
    if rank == 0:
        torch.save({"continued": continued, "resumed": resumed}, out_path)


def test_checkpoint_saved_at_tp2_loads_at_tp1_and_tp2(model_dir, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    run_ranks(_save_at_tp2_then_load_at_tp2, 2, str(model_dir), ckpt, tmp_path / "out.pt")
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    torch.testing.assert_close(got["resumed"], got["continued"], atol=1e-6, rtol=0)
    torch.testing.assert_close(load_then_step({}, model_dir, ckpt), got["continued"], atol=1e-5, rtol=0)  # t = 1


def _save_at_ep2(rank, model_dir, ckpt, out_path):
    continued = save_then_continue({"expert_parallel": 2}, model_dir, ckpt)
    if rank == 0:
        torch.save(continued, out_path)


def test_moe_checkpoint_saved_at_ep2_loads_at_ep1(tmp_path):
    """Experts (and their AdamW moments) saved split over 2 expert ranks load into one rank."""
    moe_dir = make_model(tmp_path / "moe", "qwen3_moe")
    ckpt = str(tmp_path / "ckpt")
    run_ranks(_save_at_ep2, 2, str(moe_dir), ckpt, tmp_path / "out.pt")
    continued = torch.load(tmp_path / "out.pt", weights_only=False)
    torch.testing.assert_close(load_then_step({}, moe_dir, ckpt), continued, atol=1e-5, rtol=0)
