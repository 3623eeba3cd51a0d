"""Learning-rate schedule (linear warmup, then constant, linear or cosine decay) and the guarded
optimizer step that advances it.

With W warmup steps, N total steps, m = min_lr_ratio and s the number of steps already taken,
the multiplier of the peak lr for the next step is

    warmup  (s < W):  (s + 1) / (W + 1)
    constant:         1
    linear:           m + (1 − m) · (1 − f)               f = (s − W) / max(1, N − W), clipped to [0, 1]
    cosine:           m + (1 − m) · ½ · (1 + cos(π f))
"""

from __future__ import annotations

import math

import torch

from areal_fsdp.config import OptimizerConfig


def lr_multiplier(step: int, cfg: OptimizerConfig, total_steps: int | None) -> float:
    """The lr multiplier for the optimizer step that follows ``step`` completed steps."""
    warmup = cfg.warmup_steps
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.lr_scheduler == "constant":
        return 1.0
    span = max(1, (total_steps or 1) - warmup)
    frac = min(1.0, max(0.0, (step - warmup) / span))
    m = cfg.min_lr_ratio
    if cfg.lr_scheduler == "linear":
        return m + (1 - m) * (1 - frac)
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * frac))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig,
                    total_steps: int | None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following :func:`lr_multiplier` (its state_dict holds the step count)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, cfg, total_steps))


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   grad_norm: float, total_weight: float, *, set_to_none: bool = True) -> tuple[float, bool]:
    """Apply the accumulated gradients: returns (the lr of this step, whether the weights moved).

    No loss weight anywhere (e.g. every token masked) or a non-finite gradient norm: no update at
    all (an AdamW step on zero gradients would still move the weights by their momentum). The
    gradients are cleared and the schedule advances either way. ``set_to_none=False`` keeps
    gradient buffers an engine reuses across steps.
    """
    lr = float(scheduler.get_last_lr()[0])
    update = math.isfinite(grad_norm) and total_weight > 0
    if update:
        optimizer.step()
    optimizer.zero_grad(set_to_none=set_to_none)
    scheduler.step()
    return lr, update
