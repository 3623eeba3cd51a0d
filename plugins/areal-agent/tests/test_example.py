"""``examples/agent_calculator.sh`` end to end with every stage shortened (300 demonstrations, 20 SFT
steps, 1 GRPO step, 8 held-out problems): the script's own commands, not a copy of them. The full
run and its measured eval gain are in docs/agents.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

for module in ("areal_fsdp", "areal_grpo", "areal_embedded", "areal_arith"):
    pytest.importorskip(module)

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "examples" / "agent_calculator.sh"


def test_the_calculator_example_runs_every_stage(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, AGENT_CALC_DIR=str(out), AGENT_CALC_SKIP_INSTALL="1", OMP_NUM_THREADS="1",
               VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               AGENT_CALC_PREPARE_ARGS="--n-sft 300 --n-valid 8",
               AGENT_CALC_SFT_ARGS="trainer.total_steps=20 trainer.log_every=10",
               AGENT_CALC_RL_ARGS="trainer.total_steps=1 trainer.eval_every=1 trainer.checkpoint_every=0 "
                                  "rollout.batch_size=2 workflow.n_samples=4 actor.optimizer.total_steps=2")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "held-out eval reward (greedy, 8 problems): step 0:" in proc.stdout

    # the teacher's tool calls parse back to the problem's expression, and its answers are the totals
    from areal_agent.toolcalls import parse_tool_calls

    rows = [json.loads(line) for line in (out / "data" / "sft.jsonl").read_text().splitlines()]
    calls = [r for r in rows if r["completion"].startswith("<tool_call>")]
    assert 0 < len(calls) < len(rows)
    for r in calls:
        (call,) = parse_tool_calls(r["completion"]).tool_calls
        expression = r["prompt"].split("<|im_start|>user\n")[1].split("=")[0]
        assert (call.name, call.arguments) == ("calculator", {"expression": expression})
    metrics = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics if "eval/reward_mean" in m] == [0, 1]
    assert [m["step"] for m in metrics if "train/reward/mean" in m] == [1]
