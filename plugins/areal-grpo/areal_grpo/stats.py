"""Training statistics summed over micro-batches (and data-parallel ranks), reported as means.

The loss functions run once per micro-batch, on whichever rank holds it. Each adds sums, counts
and maxima here as detached tensors (a policy loss through ``x.stats``, see
:mod:`areal_grpo.policy_loss`); :meth:`StatSums.result` turns them into floats once per step. So
``add_mean(name, v, mask)`` reports Σ v over the masked tokens of every micro-batch of every
minibatch and epoch of the step, on every rank, divided by the number of those tokens: a token
mean over the whole step, whatever the micro-batching. ``add_max`` reports the step's maximum.
When ``torch.distributed`` is initialised the sums and maxima are all-reduced over the default
process group first (every trainer rank calls ``train_step`` in lockstep). The names are gathered
first and united: a rank whose micro-batches were all empty padding never called the loss
functions, and names that depend on the data may differ by rank; a name a rank lacks counts as
nothing there.
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
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            names, maxima = _names_on_all_ranks(names, maxima)
        sums = torch.tensor([float(self.sums.get(n, 0.0)) for n in names])
        counts = torch.tensor([float(self.counts.get(n, 0.0)) for n in names])
        tops = torch.tensor([float(self.maxima.get(n, float("-inf"))) for n in maxima])
        if distributed:
            dist = torch.distributed
            # gloo reduces CPU tensors; an accelerator's backend (nccl, hccl...) its own device's
            device = "cpu" if dist.get_backend() == "gloo" else torch.accelerator.current_accelerator()
            both, tops = torch.cat([sums, counts]).to(device), tops.to(device)
            dist.all_reduce(both)
            dist.all_reduce(tops, op=dist.ReduceOp.MAX)
            both, tops = both.cpu(), tops.cpu()
            sums, counts = both[:len(names)], both[len(names):]
        out = {n: float(s / c) if c > 0 else 0.0 for n, s, c in zip(names, sums, counts)}
        out.update({n: float(t) if torch.isfinite(t) else 0.0 for n, t in zip(maxima, tops)})
        return out


def _names_on_all_ranks(names: list[str], maxima: list[str]) -> tuple[list[str], list[str]]:
    """The union over ranks of the mean and max names (a rank may have missed some)."""
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (names, maxima))
    return sorted({n for g in gathered for n in g[0]}), sorted({n for g in gathered for n in g[1]})
