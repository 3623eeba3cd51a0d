"""CheckpointLayout: in-memory weights <-> the saved files' weights, exactly (Qwen3-MoE's fused experts)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file

from areal_core.errors import ArealError
from areal_core.testing.tiny import make_tiny_model, tiny_config, with_sliding_window
from areal_core.weight_layout import CheckpointLayout, check_full_attention, sliding_window_of


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path_factory.mktemp("moe"), arch="qwen3_moe")
    return AutoModelForCausalLM.from_pretrained(path), load_file(str(path / "model.safetensors"))


def test_to_checkpoint_gives_exactly_the_saved_files(moe):
    model, files = moe
    layout = CheckpointLayout(model)
    assert any("experts.gate_up_proj" in name for name in layout.converted)
    mine = dict(layout.to_checkpoint(model.named_parameters()))
    assert set(mine) == set(files)  # per-expert names; tied lm_head absent from both
    for name, tensor in files.items():
        assert torch.equal(mine[name], tensor), name


def test_from_checkpoint_rebuilds_the_fused_tensors(moe):
    model, files = moe
    back = CheckpointLayout(model).from_checkpoint(files)
    state = model.state_dict()
    assert "model.layers.0.mlp.experts.gate_up_proj" in back
    for name, tensor in back.items():
        assert torch.equal(tensor, state[name]), name


def test_an_incomplete_expert_set_and_unknown_names_are_refused(moe):
    model, files = moe
    layout = CheckpointLayout(model)
    partial = {k: v for k, v in files.items() if "experts.3.up_proj" not in k}
    with pytest.raises(ArealError, match="did not arrive.*experts.3.up_proj"):
        layout.from_checkpoint(partial)
    with pytest.raises(ArealError, match="not checkpoint names"):
        layout.from_checkpoint({"model.layers.0.mlp.experts.gate_up_proj": torch.zeros(1)})


def test_dense_models_pass_through(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config("qwen3", "0.2m", 64))
    layout = CheckpointLayout(model)
    assert not layout.converted and set(layout.owner) == set(model.state_dict())


def test_sliding_window_detection(tmp_path):
    assert sliding_window_of(tiny_config("qwen3", "0.2m", 64)) is None
    assert sliding_window_of(tiny_config("qwen3_moe", "0.2m", 64)) is None
    from transformers import AutoConfig

    windowed = AutoConfig.from_pretrained(with_sliding_window(make_tiny_model(tmp_path / "m", arch="qwen3"), 8))
    assert sliding_window_of(windowed) == 8
    with pytest.raises(ArealError, match="'qwen3' with sliding-window attention"):
        check_full_attention(windowed, "this test")
