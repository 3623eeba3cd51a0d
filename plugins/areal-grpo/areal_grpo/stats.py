"""Training statistics summed over micro-batches (and data-parallel ranks), reported as means.

The loss functions run once per micro-batch, on whichever rank holds it. Each adds sums, counts
and maxima here as detached tensors (a policy loss through ``x.stats``, see
:mod:`areal_grpo.policy_loss`); :meth:`StatSums.result` turns them into floats once per step. So
``add_mean(name, v, mask)`` reports Σ v over the masked tokens of every micro-batch of every
minibatch and epoch of the step, on every rank, divided by the number of those tokens: a token
mean over the whole step, whatever the micro-batching. ``add_max`` reports the step's maximum.
When ``torch.distributed`` is initialised the sums and maxima are all-reduced over the default
process group first: every trainer rank calls ``train_step`` in lockstep, so a name must be added
on every rank in the same step (make it depend on the config, not on the data), and then every
rank reduces the same tensors.
"""

from __future__ import annotations

import torch


class StatSums:
    """``mean[name] = Σ value / Σ count`` and ``max[name]`` accumulated over micro-batches."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.maxima: dict[str, torch.Tensor] = {}

    def add_mean(self, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Add Σ values[mask] and |mask| to the running mean ``name``."""
        mask = mask.bool()
        total = torch.where(mask, values.detach().float(), 0.0).sum()
        count = mask.sum().float()
        self.sums[name] = self.sums.get(name, 0.0) + total.cpu()
        self.counts[name] = self.counts.get(name, 0.0) + count.cpu()

    def add_max(self, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Raise the running max ``name`` to max(values[mask])."""
        masked = torch.where(mask.bool(), values.detach().float(), float("-inf"))
        top = masked.max().cpu() if masked.numel() else torch.tensor(float("-inf"))
        self.maxima[name] = torch.maximum(self.maxima.get(name, top), top)

    def result(self) -> dict[str, float]:
        """Means (0 where nothing was counted) and maxima, reduced over ranks when distributed."""
        names, maxima = sorted(self.sums), sorted(self.maxima)
        sums = torch.stack([torch.as_tensor(self.sums[n]) for n in names]) if names else torch.zeros(0)
        counts = torch.stack([torch.as_tensor(self.counts[n]) for n in names]) if names else torch.zeros(0)
        tops = torch.stack([self.maxima[n] for n in maxima]) if maxima else torch.zeros(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            dist = torch.distributed
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            both, tops = torch.cat([sums, counts]).to(device), tops.to(device)
            dist.all_reduce(both)
            dist.all_reduce(tops, op=dist.ReduceOp.MAX)
            (sums, counts), tops = both.cpu().split(len(names)), tops.cpu()
        out = {n: float(s / c) if c > 0 else 0.0 for n, s, c in zip(names, sums, counts)}
        out.update({n: float(t) if torch.isfinite(t) else 0.0 for n, t in zip(maxima, tops)})
        return out
