"""Components that ship inside areal-core itself, registered before any entry point."""

from areal_core.hookspecs import hookimpl
from areal_core.registry import Component


@hookimpl
def areal_register_workflows():
    return [
        Component("rlvr", "areal_core.rollout.rlvr:RLVRWorkflow", "areal_core.rollout.rlvr:RLVRConfig",
                  "prompt -> n samples -> verifiable reward"),
        Component("vision_rlvr", "areal_core.rollout.vision_rlvr:VisionRLVRWorkflow",
                  "areal_core.rollout.vision_rlvr:VisionRLVRConfig",
                  "rlvr with the sample's pictures in the prompt (vision-language models)"),
    ]


@hookimpl
def areal_register_rewards():
    return [
        Component("reward_model", "areal_core.rollout.reward_model:RewardModelReward",
                  "areal_core.rollout.reward_model:RewardModelConfig",
                  "scalar score of a trained reward model (an `areal rm` export), batched"),
    ]


@hookimpl
def areal_register_schedulers():
    return [
        Component("local", "areal_core.launcher.local:LocalScheduler", "areal_core.launcher.local:LocalSchedulerConfig",
                  "inference servers and trainer ranks as subprocesses on this machine"),
    ]


@hookimpl
def areal_register_devices():
    return [
        Component("cpu", "areal_core.devices:CPUDevice", None, "CPU tensors, gloo collectives"),
        Component("cuda", "areal_core.devices:CUDADevice", None, "NVIDIA GPUs, NCCL collectives"),
    ]


@hookimpl
def areal_register_metric_sinks():
    return [
        Component("jsonl", "areal_core.metrics:JsonlSink", None, "one JSON line per step in RUN_DIR/metrics.jsonl (always on)"),
        Component("wandb", "areal_core.metrics:WandbSink", "areal_core.metrics:WandbConfig", "Weights & Biases (WANDB_MODE=offline works)"),
        Component("tensorboard", "areal_core.metrics:TensorboardSink", None, "TensorBoard event files in RUN_DIR/tensorboard"),
    ]


@hookimpl
def areal_register_pair_losses():
    module = "areal_core.trainer.pair_losses"
    return [
        Component("dpo", f"{module}:DPOLoss", f"{module}:DPOConfig", "DPO sigmoid loss on policy/reference log-ratios"),
        Component("ipo", f"{module}:IPOLoss", f"{module}:IPOConfig", "IPO: squared log-ratio margin regressed to 1/(2β)"),
        Component("bradley_terry", f"{module}:BradleyTerryLoss", f"{module}:BradleyTerryConfig",
                  "reward model: -log σ(s_chosen - s_rejected) on last-token scores"),
    ]
