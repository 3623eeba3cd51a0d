#!/usr/bin/env bash
# bash examples/quickstart.sh
#
# The CPU quickstart in one command: install areal (CPU torch), then
#   1. areal-arith prepare   a tiny Qwen2 model + sums-of-digits datasets, generated offline
#   2. areal sft             teach the answer format from noisy-teacher demonstrations
#   3. areal train           asynchronous GRPO against the exact-answer verifier
#   4. areal plot            runs/quickstart/grpo/plot.png
# and print the held-out eval reward before and after RL. See docs/quickstart.md.
#
# Uses the active virtual environment, or creates .venv. Re-running starts over: it deletes
# runs/quickstart (QUICKSTART_DIR) first. Set QUICKSTART_SKIP_INSTALL=1 to skip pip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${QUICKSTART_DIR:-runs/quickstart}
START=$(date +%s)

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
if [ -z "${QUICKSTART_SKIP_INSTALL:-}" ]; then
  echo "== installing areal-core, areal-fsdp, areal-grpo, areal-sglang + areal-embedded, areal-arith (CPU torch)"
  # constraints.txt pins torch==2.13.0, the CPU wheel: any other torch pulls GBs of CUDA packages
  pip install -q -c constraints.txt -e ".[plot]" -e plugins/areal-fsdp -e plugins/areal-grpo \
    -e plugins/areal-sglang -e plugins/areal-embedded -e contrib/areal-arith
fi
INSTALLED=$(date +%s)

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rm -rf "$OUT"
echo "== 1/4 data + tiny model -> $OUT/data"
areal-arith prepare "$OUT/data"
echo "== 2/4 SFT on noisy demonstrations -> $OUT/sft/export"
areal sft --config examples/quickstart_sft.yaml fileroot="$(dirname "$OUT")" experiment_name="$(basename "$OUT")" \
  model_path="$OUT/data/model" output_path="$OUT/sft/export" train_dataset.path="$OUT/data/sft.jsonl"
echo "== 3/4 asynchronous GRPO (eta=1) -> $OUT/grpo"
areal train --config examples/quickstart.yaml fileroot="$(dirname "$OUT")" experiment_name="$(basename "$OUT")" \
  model_path="$OUT/sft/export" train_dataset.path="$OUT/data/train.jsonl" valid_dataset.path="$OUT/data/valid.jsonl"
echo "== 4/4 plot"
areal plot "$OUT/grpo"
END=$(date +%s)

python - "$OUT/grpo" "$((INSTALLED - START))" "$((END - INSTALLED))" <<'EOF'
import json, sys
from pathlib import Path

run_dir, install_s, run_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
evals = [(r["step"], r["eval/reward_mean"]) for r in rows if r.get("eval/reward_mean") is not None]
(s0, first), (s1, last) = evals[0], evals[-1]
print(f"\nheld-out eval reward (greedy, {int(rows[0].get('eval/n', 0))} problems): "
      f"step {s0}: {first:.3f}  ->  step {s1}: {last:.3f}  ({last - first:+.3f})")
print("eval curve: " + "  ".join(f"{s}:{v:.2f}" for s, v in evals))
print(f"time: install {install_s} s, prepare + SFT + RL + plot {run_s} s, total {install_s + run_s} s")
print(f"plot: {run_dir / 'plot.png'}   metrics: {run_dir / 'metrics.jsonl'}")
EOF
