#!/usr/bin/env bash
# bash examples/agent_calculator.sh
#
# Agentic RL on CPU in one command: an openai-SDK agent with a calculator tool
# (examples/agent_calculator.py:run) is trained through areal-agent's proxy:
#   1. prepare     a tiny Qwen2 model (0.2 M parameters) + problems a+b (a, b in 50..99) + teacher demonstrations
#   2. areal sft   teach the tool-call format (the teacher uses the calculator 40% of the time, else guesses)
#   3. areal train GRPO on the agent's conversations (workflow: agent), groups of 8 runs
# and print the held-out eval reward (greedy) before and after RL. See docs/agents.md.
#
# Uses the active virtual environment, or creates .venv. Re-running starts over: it deletes
# runs/agent_calculator (AGENT_CALC_DIR) first. AGENT_CALC_SKIP_INSTALL=1 skips pip.
# AGENT_CALC_PREPARE_ARGS, AGENT_CALC_SFT_ARGS, AGENT_CALC_RL_ARGS: extra arguments of each stage
# (the test of this script shortens every stage with them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${AGENT_CALC_DIR:-runs/agent_calculator}
START=$(date +%s)

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
if [ -z "${AGENT_CALC_SKIP_INSTALL:-}" ]; then
  echo "== installing areal-core, areal-fsdp, areal-grpo, areal-sglang, areal-embedded, areal-agent, areal-arith, openai (CPU torch)"
  pip install -q -c constraints.txt -e ".[plot]" -e plugins/areal-fsdp -e plugins/areal-grpo -e plugins/areal-sglang \
    -e plugins/areal-embedded -e plugins/areal-agent -e contrib/areal-arith openai
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/examples${PYTHONPATH:+:$PYTHONPATH}"   # the agent module: agent_calculator:run
rm -rf "$OUT"
echo "== 1/3 data + tiny model -> $OUT/data"
# shellcheck disable=SC2086
python examples/agent_calculator.py prepare "$OUT/data" ${AGENT_CALC_PREPARE_ARGS:-}
echo "== 2/3 SFT on the teacher's demonstrations -> $OUT/sft/export"
areal sft --config examples/agent_calculator_sft.yaml fileroot="$(dirname "$OUT")" experiment_name="$(basename "$OUT")" \
  model_path="$OUT/data/model" output_path="$OUT/sft/export" train_dataset.path="$OUT/data/sft.jsonl" ${AGENT_CALC_SFT_ARGS:-}
echo "== 3/3 GRPO through the agent proxy -> $OUT/grpo"
areal train --config examples/agent_calculator.yaml fileroot="$(dirname "$OUT")" experiment_name="$(basename "$OUT")" \
  model_path="$OUT/sft/export" train_dataset.path="$OUT/data/train.jsonl" valid_dataset.path="$OUT/data/valid.jsonl" \
  ${AGENT_CALC_RL_ARGS:-}
END=$(date +%s)

python - "$OUT/grpo" "$((END - START))" <<'PY'
import json, sys
from pathlib import Path

rows = [json.loads(line) for line in (Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines() if line.strip()]
evals = [(r["step"], r["eval/reward_mean"]) for r in rows if r.get("eval/reward_mean") is not None]
n = sum(1 for line in (Path(sys.argv[1]).parent / "data" / "valid.jsonl").open())
print(f"\nheld-out eval reward (greedy, {n} problems): step {evals[0][0]}: {evals[0][1]:.3f} -> "
      f"step {evals[-1][0]}: {evals[-1][1]:.3f}  ({evals[-1][1] - evals[0][1]:+.3f})")
print("eval curve: " + "  ".join(f"{s}:{v:.2f}" for s, v in evals))
print(f"total wall time {int(sys.argv[2])} s")
PY
