"""HF ↔ megatron conversion: bit-exact round trips (local and Transformer-Engine names) and the
converted GPTModel's logits equal the HF model's (fp32)."""

import pytest
import torch
from safetensors.torch import load_file

from _megatron_models import ARCHS, make_model
from areal_core.testing.engines import make_train_engine, run_context
from areal_megatron.convert import Layout, hf_to_megatron, megatron_to_hf

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=ARCHS)
def model_dir(request, tmp_path_factory):
    return make_model(tmp_path_factory.mktemp(request.param), request.param)


@pytest.mark.parametrize("spec", ["local", "te"])
def test_round_trip_is_bit_exact(model_dir, spec):
    from transformers import AutoConfig

    hf = load_file(model_dir / "model.safetensors")
    layout = Layout.of(AutoConfig.from_pretrained(model_dir), spec)
    back = dict(megatron_to_hf(hf_to_megatron(hf, layout), layout))
    assert back.keys() == hf.keys()
    for name, tensor in hf.items():
        assert torch.equal(back[name], tensor), name


def test_megatron_logits_equal_hf(model_dir):
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 500, (2, 17), generator=torch.Generator().manual_seed(0))
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    engine = make_train_engine("megatron", {}, run_context(model_dir))
    try:
        with torch.no_grad():
            expected = hf(ids).logits
            on = engine.dist.device
            got = engine.model(ids.to(on), torch.arange(17, device=on).expand(2, 17), None)[..., :expected.shape[-1]].cpu()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    finally:
        engine.destroy()


def test_moe_with_tensor_parallel_is_a_clear_error():
    from areal_core.plugin import ArealError
    from areal_core.testing.tiny import tiny_config
    from areal_megatron.config import MegatronEngineConfig
    from areal_megatron.model import check_divisible

    lay = Layout.of(tiny_config("qwen3_moe", "3m", 512))
    with pytest.raises(ArealError, match="tensor_parallel=2 needs sequence parallel"):
        check_divisible(MegatronEngineConfig(tensor_parallel=2), lay, 2)
    with pytest.raises(ArealError, match="4 experts are not divisible by expert_parallel=3"):
        check_divisible(MegatronEngineConfig(expert_parallel=3), lay, 3)


def test_unknown_architecture_is_a_clear_error():
    from transformers import GPT2Config

    from areal_core.plugin import ArealError

    with pytest.raises(ArealError, match="model_type 'gpt2' has no weight conversion"):
        Layout.of(GPT2Config())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_without_cuda_and_without_the_shim_the_engine_says_megatron_needs_cuda(tmp_path):
    import subprocess
    import sys

    model_dir = make_model(tmp_path / "model", "qwen2_tied")
    code = ("from areal_core.testing.engines import make_train_engine, run_context\n"
            f"make_train_engine('megatron', {{}}, run_context({str(model_dir)!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode != 0
    assert "megatron-core calls CUDA directly and cannot run on device 'cpu'" in out.stderr, out.stderr[-2000:]
