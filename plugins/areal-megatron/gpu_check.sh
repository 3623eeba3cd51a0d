#!/usr/bin/env bash
# GPU check of areal-megatron, for a machine with >= 2 CUDA GPUs and an environment that has
# areal-core, areal-fsdp, areal-grpo, areal-sglang, areal-embedded and this plugin installed
# (a CUDA torch; Transformer Engine optional). It prints PASS/FAIL/SKIP per check and exits 1
# if any check failed.
#
# 1. The CPU suite on CUDA without the shim (tests/conftest.py installs it only when CUDA is
#    absent): conversion (incl. Qwen2/3-MoE), HF logits, contract suite, 2-rank t/p/d/e
#    equivalence over NCCL, bucketed weight streaming at t/p/e=2, packed = padded rows,
#    checkpoint resharding, one-rank `areal train` runs.
# 2. bf16: a t=2 engine in bfloat16 trains (loss falls) and its logprobs stay within 0.05 of fp32.
# 3. The Transformer-Engine layer spec (if TE imports): HF logits within 1e-2 (TE kernels, fp32),
#    for Qwen3 and Qwen3-MoE.
# 4. Qwen3-MoE at e=2 with the alltoall dispatcher (NCCL only): logprobs equal the allgather
#    dispatcher's (1e-5) and one train step gives the same loss.
# The engine does not implement sequence parallel, context parallel or the distributed optimizer
# yet; the script says so instead of testing them.
#
# Status: written without a GPU; it has not run.
set -u
cd "$(dirname "$0")"
failed=0
report() { if [ "$2" = 0 ]; then echo "PASS $1"; else echo "FAIL $1"; failed=1; fi; }

python -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() >= 2 else 1)" \
  || { echo "FAIL needs >= 2 CUDA GPUs"; exit 1; }

python -m pytest -q -p no:cacheprovider tests/test_megatron_convert.py tests/test_megatron_contract.py \
  tests/test_megatron_parallel.py tests/test_megatron_streaming.py tests/test_megatron_packing.py \
  "tests/test_megatron_rl.py::test_one_rank_run_syncs_weights_the_server_verifies"
report "CPU suite on CUDA, no shim" $?

cat > /tmp/areal_megatron_bf16_check.py <<'PY'
import sys
sys.path.insert(0, "tests")
import torch
from _megatron_models import make_model
from _megatron_ranks import run_ranks
from areal_core.testing.engines import make_train_engine, run_context
from areal_core.testing.train_engine import mask_count, nll_loss, random_batch

def worker(rank, model_dir, out):
    batch = random_batch([30, 50, 20, 64], seed=0)
    fp32 = make_train_engine("megatron", {"tensor_parallel": 2}, run_context(model_dir))
    ref = fp32.forward(batch); fp32.destroy()
    bf16 = make_train_engine("megatron", {"tensor_parallel": 2, "dtype": "bfloat16", "optimizer": {"lr": 1e-3}},
                             run_context(model_dir))
    gap = float((bf16.forward(batch) - ref).abs().max())
    losses = [bf16.train_batch(batch, nll_loss, mask_count)["loss"] for _ in range(5)]
    bf16.destroy()
    if rank == 0:
        torch.save({"gap": gap, "losses": losses}, out)

if __name__ == "__main__":
    model = make_model("/tmp/areal_megatron_bf16_model", "qwen2_tied")
    run_ranks(worker, 2, str(model), "/tmp/areal_megatron_bf16.pt")
    r = torch.load("/tmp/areal_megatron_bf16.pt")
    print("bf16 vs fp32 logprob gap", r["gap"], "losses", r["losses"])
    sys.exit(0 if r["gap"] < 0.05 and r["losses"][-1] < r["losses"][0] else 1)
PY
python /tmp/areal_megatron_bf16_check.py
report "bf16, t=2: trains, logprobs within 0.05 of fp32" $?

if python -c "import transformer_engine" 2>/dev/null; then
  cat > /tmp/areal_megatron_te_check.py <<'PY'
import sys
sys.path.insert(0, "tests")
import torch
from transformers import AutoModelForCausalLM
from _megatron_models import make_model
from areal_core.testing.engines import make_train_engine, run_context

worst = 0.0
for arch in ("qwen3", "qwen3_moe"):
    model = make_model(f"/tmp/areal_megatron_te_{arch}", arch)
    engine = make_train_engine("megatron", {"layer_spec": "transformer_engine"}, run_context(model))
    ids = torch.randint(0, 500, (2, 64))
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(model)(ids).logits
        got = engine.model(ids.cuda(), torch.arange(64, device="cuda").expand(2, 64), None)[..., :hf.shape[-1]].cpu()
    engine.destroy()
    gap = float((got - hf).abs().max())
    print(f"TE spec vs HF logits gap ({arch})", gap)
    worst = max(worst, gap)
sys.exit(0 if worst < 1e-2 else 1)
PY
  python /tmp/areal_megatron_te_check.py
  report "Transformer-Engine layer spec: HF logits within 1e-2 (qwen3, qwen3_moe)" $?
else
  echo "SKIP Transformer-Engine layer spec (transformer_engine not installed)"
fi

cat > /tmp/areal_megatron_alltoall_check.py <<'PY'
import sys
sys.path.insert(0, "tests")
import torch
from _megatron_models import make_model
from _megatron_ranks import run_ranks
from areal_core.testing.engines import make_train_engine, run_context
from areal_core.testing.train_engine import mask_count, nll_loss, random_batch

def worker(rank, model_dir, out):
    batch = random_batch([30, 50, 20, 64, 7, 12], seed=0)
    got = {}
    for dispatcher in ("allgather", "alltoall"):
        engine = make_train_engine("megatron", {"expert_parallel": 2, "moe_token_dispatcher": dispatcher},
                                   run_context(model_dir))
        got[dispatcher] = (engine.forward(batch), engine.train_batch(batch, nll_loss, mask_count)["loss"])
        engine.destroy()
    if rank == 0:
        torch.save(got, out)

if __name__ == "__main__":
    model = make_model("/tmp/areal_megatron_moe_model", "qwen3_moe")
    run_ranks(worker, 2, str(model), "/tmp/areal_megatron_alltoall.pt")
    r = torch.load("/tmp/areal_megatron_alltoall.pt")
    gap = float((r["alltoall"][0] - r["allgather"][0]).abs().max())
    print("alltoall vs allgather logprob gap", gap, "losses", r["allgather"][1], r["alltoall"][1])
    sys.exit(0 if gap < 1e-5 and abs(r["alltoall"][1] - r["allgather"][1]) < 1e-5 else 1)
PY
python /tmp/areal_megatron_alltoall_check.py
report "Qwen3-MoE e=2: alltoall dispatcher = allgather (1e-5)" $?

echo "NOT IMPLEMENTED in the engine (not checked): sequence parallel, context parallel, distributed optimizer, grouped GEMM experts"
exit $failed
