"""End to end on a tiny Qwen2.5-VL (and Qwen3-VL): `areal train` with the ``vision_rlvr`` workflow on the
shape-counting pictures of examples/vision/shapes.py (real PIL images, base64 in the dataset),
the embedded server generating from picture + text, the fsdp engine training with the pixels,
and weight syncs (Qwen2.5-VL by disk, Qwen3-VL by broadcast) whose server checksums equal the
trainer's. The reward is
the completion's length in characters / 64 (the random tiny model's completions vary in it, so GRPO
gets non-zero advantages; its counting accuracy is ~0, see docs/models.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("areal_embedded")
pytest.importorskip("areal_fsdp")
pytest.importorskip("areal_grpo")

import rl_e2e_support as support
from areal_core import hookimpl
from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.registry import Component, build_registry, set_registry
from areal_core.testing.tiny import make_tiny_model
from areal_core.trainer.entry import run_training

REWARD_NAME = "e2e_vision_length"


def length_reward(prompt: str, completion: str, sample: dict) -> float:
    return len(completion) / 64


def make_reward(config):
    return length_reward


@hookimpl
def areal_register_rewards():
    return [Component(REWARD_NAME, f"{__name__}:make_reward", None, "completion length / 64 (plumbing tests)")]


SHAPES = Path(__file__).resolve().parents[2] / "examples" / "vision" / "shapes.py"


def shapes_module():
    spec = importlib.util.spec_from_file_location("vision_shapes", SHAPES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry():
    registry = build_registry(extra_plugins=[(sys.modules[__name__], "vision-e2e")])
    set_registry(registry)
    yield registry
    set_registry(None)


@pytest.mark.parametrize("arch,sync", [("qwen2_5_vl", "disk"), ("qwen3_vl", "distributed")])
def test_vision_rlvr_run_trains_and_syncs(tmp_path, registry, arch, sync):
    shapes = shapes_module()
    shapes.main([str(tmp_path), "--train", "8", "--valid", "2"])
    model = make_tiny_model(tmp_path / "model", arch=arch)
    cfg = support.run_config(tmp_path, model, f"vision-{arch}-{sync}",
                             workflow={"name": "vision_rlvr", "n_samples": 2, "max_new_tokens": 8, "temperature": 1.0},
                             reward={"name": REWARD_NAME})
    path = support.write_config(tmp_path / "run.yaml", cfg)
    overrides = [f"weight_sync.type={sync}", "trainer.total_steps=2", "trainer.checkpoint_every=0"]
    run_dir = run_training(load_config(config_path=path, overrides=overrides, registry=registry), registry=registry)
    metrics = [m for m in read_metrics(run_dir) if m["step"] > 0]  # step 0: the eval before training
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["timing/verify_s"] > 0 and m["inference/version"] == m["step"] for m in metrics)
    assert any(m["train/actor/grad_norm"] > 0 for m in metrics)


def test_a_sample_without_its_pictures_is_named(tmp_path):
    from transformers import AutoTokenizer

    from areal_core.errors import ArealError
    from areal_core.rollout.vision_rlvr import VisionRLVRConfig, VisionRLVRWorkflow

    model = make_tiny_model(tmp_path / "model", arch="qwen2_5_vl")
    workflow = VisionRLVRWorkflow(VisionRLVRConfig(name="vision_rlvr"), lambda *a: 0.0, AutoTokenizer.from_pretrained(model))
    with pytest.raises(ArealError, match="sample 's1' has no 'images'"):
        workflow.encode_prompt({"id": "s1", "prompt": "How many?"})
    row = shapes_module().rows(1, 0, "t", 3)[0]
    text, ids = workflow.encode_prompt(row)
    ids, images, inputs = workflow.encode_images(row, ids)
    assert images == row["images"] and ids.count(workflow.image_token_id) == int(inputs["image_grid_thw"].prod()) // 4
