"""``named_full_weights`` streams full tensors in HF (file) names bucket by bucket: on 2 gloo
ranks at t=2 (Qwen3), p=2 and e=2 (Qwen3-MoE: expert weights gather over the expert group) the
streamed weights are bit-exactly the model's files and what ``export_hf`` writes, and rank 0
never holds more gathered memory than one bucket (``weight_bucket_bytes``, or the one megatron
tensor larger than it that makes a bucket alone) while the consumer keeps nothing: a fraction
of what gathering the whole model held."""

import weakref

import pytest
import torch
from safetensors.torch import load_file

from _megatron_models import make_model
from _megatron_ranks import run_ranks
from areal_core.testing.engines import make_train_engine, run_context

pytestmark = pytest.mark.timeout(600)
BUCKET = 100_000  # bytes; the tiny model holds ~1.5 MB, its largest tensor (the embedding) 256 KB


def stream_holding_nothing(engine) -> tuple[int, int, int]:
    """Iterate ``named_full_weights`` dropping every tensor at once: (peak bytes of gathered
    storage alive at a yield, largest such storage, total gathered bytes). A parameter's own
    storage (an unsplit weight yielded as a view) is not counted: it is not held for streaming."""
    params = {p.untyped_storage().data_ptr() for p in engine.model.parameters()}
    live: dict[int, tuple[weakref.ref, int]] = {}
    peak = largest = total = 0
    for _, tensor in engine.named_full_weights():
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in live:
            live[ptr] = (weakref.ref(storage), storage.nbytes())
            largest, total = max(largest, storage.nbytes()), total + storage.nbytes()
        del storage, tensor
        live = {k: v for k, v in live.items() if v[0]() is not None}
        peak = max(peak, sum(n for _, n in live.values()))
    return peak, largest, total


def _worker(rank, model_dir, layout, export_dir, out_path):
    engine = make_train_engine("megatron", {"weight_bucket_bytes": BUCKET, **layout}, run_context(model_dir))
    try:
        peak = stream_holding_nothing(engine)
        streamed = {k: v.clone() for k, v in engine.named_full_weights()}
        engine.export_hf(export_dir)
    finally:
        engine.destroy()
    if rank == 0:
        torch.save({"peak": peak, "streamed": streamed}, out_path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {arch: make_model(tmp_path_factory.mktemp(arch), arch, layers=2) for arch in ("qwen3", "qwen3_moe")}


@pytest.mark.parametrize("arch,layout", [("qwen3", {"tensor_parallel": 2}), ("qwen3_moe", {"pipeline_parallel": 2}),
                                         ("qwen3_moe", {"expert_parallel": 2})], ids=["tp2", "pp2", "ep2"])
def test_streamed_weights_equal_files_and_export_within_one_bucket(models, arch, layout, tmp_path):
    model_dir = models[arch]
    run_ranks(_worker, 2, str(model_dir), layout, str(tmp_path / "export"), tmp_path / "out.pt")
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    files = load_file(model_dir / "model.safetensors")
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert got["streamed"].keys() == files.keys() == exported.keys()
    for name, tensor in files.items():
        assert torch.equal(got["streamed"][name], tensor), name
        assert torch.equal(exported[name], tensor), name
    peak, _, total = got["peak"]
    bound = max(BUCKET, largest_megatron_tensor(model_dir))
    assert 0 < peak <= bound, (peak, bound, total)
    assert total > 2 * bound  # what rank 0 held at once before streaming: every gathered tensor


def largest_megatron_tensor(model_dir) -> int:
    from transformers import AutoConfig

    from areal_megatron.convert import Layout, hf_to_megatron

    full = hf_to_megatron(load_file(model_dir / "model.safetensors"), Layout.of(AutoConfig.from_pretrained(model_dir)))
    return max(t.nbytes for t in full.values())


def test_bucket_plan_cuts_at_the_limit():
    from areal_megatron.streaming import Unit, buckets

    units = [Unit(0, f"w{i}", ((f"w{i}", (n,)),), torch.float32) for i, n in enumerate([10, 10, 30, 5, 5, 5])]
    assert [[u.local for u in b] for b in buckets(units, 80)] == [["w0", "w1"], ["w2"], ["w3", "w4", "w5"]]
