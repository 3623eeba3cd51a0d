"""``areal train`` with the ``agent`` workflow: an openai-SDK agent (tests/sample_agents.py) trained with
GRPO through the proxy, embedded server + FSDP on CPU, two steps and evals (~20 s on an idle machine).
Skipped when areal-fsdp / areal-grpo / areal-arith are not installed (tox -e agent installs them)."""

from __future__ import annotations

import json

import pytest

for module in ("areal_fsdp", "areal_grpo", "areal_embedded", "areal_arith"):
    pytest.importorskip(module)

from areal_core.config.loader import load_config
from areal_core.metrics import read_metrics
from areal_core.registry import build_registry, set_registry

CONFIG = """
experiment_name: agent_e2e
trial_name: grpo
seed: 1
actor: {name: fsdp, attn_implementation: varlen_sdpa, optimizer: {lr: 1.0e-4, total_steps: 4}}
algorithm: {name: grpo, n_minibatches: 1}
inference: {name: embedded, n_servers: 1, threads: 1, max_batch: 16}
workflow: {name: agent, agent: "sample_agents:calculator_agent", chat_template: hermes, n_samples: 4,
           max_new_tokens: 64, temperature: 1.0, export: concat, timeout_s: 120}
reward: {name: arith}          # unused: the agent returns its reward
rollout: {batch_size: 2, max_head_offpolicyness: 1}
weight_sync: {type: disk}
trainer: {total_steps: 2, eval_every: 2, eval_temperature: 0.0, checkpoint_every: 0}
"""


def test_areal_train_runs_the_agent_workflow(tmp_path, tool_model):
    from areal_core.trainer.entry import run_training

    rows = [{"id": f"q{i}", "prompt": f"add two and three ({i})", "answer": 5 if i % 2 else 6} for i in range(8)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (tmp_path / "run.yaml").write_text(CONFIG)
    registry = build_registry()
    set_registry(registry)
    try:
        cfg = load_config(config_path=tmp_path / "run.yaml", env_prefix=None, registry=registry,
                          overrides=[f"fileroot={tmp_path / 'runs'}", f"model_path={tool_model}",
                                     f"train_dataset.path={tmp_path / 'train.jsonl'}",
                                     f"valid_dataset.path={tmp_path / 'valid.jsonl'}"])
        run_dir = run_training(cfg, registry=registry)
    finally:
        set_registry(None)
    metrics = read_metrics(run_dir)
    evals = [m["eval/reward_mean"] for m in metrics if "eval/reward_mean" in m]
    assert len(evals) == 2 and evals[0] == pytest.approx(0.5)  # greedy "The answer is 5." is right for odd ids
    assert [m["step"] for m in metrics if "train/reward/mean" in m] == [1, 2]
