"""The preference-pair losses shipped with areal-core: ``dpo``, ``ipo``, ``bradley_terry``.

Each is a :class:`~areal_core.api.protocols.PairLoss`: a function of two [P] float64 tensors, the
chosen and the rejected sequence's contribution, returning the loss of every pair. With
``h = x_c − x_r`` (for DPO/IPO ``x = Σ log π_θ − Σ log π_ref`` over the completion tokens)::

    dpo             −(1 − ε)·log σ(β·h) − ε·log σ(−β·h) − α·x_c (ε = label_smoothing; ε = 0: Rafailov et al. 2023;
                                                                  α = nll_coef: the chosen answer's NLL, RPO, Pang et al. 2024)
    ipo             (h − 1/(2β))²                                (Azar et al. 2023)
    bradley_terry   −log σ(s_c − s_r)                            (x = the reward model's score s)

Implicit rewards reported as metrics: ``β·x`` for DPO and IPO, the score itself for Bradley–Terry;
preference accuracy is the fraction of pairs whose chosen reward is higher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from areal_core.config.base import ComponentConfig


class DPOConfig(ComponentConfig):
    """DPO with the sigmoid loss."""

    beta: float = Field(0.1, gt=0, description="β: scale of the log-ratio margin (higher: stay closer to the reference)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ε: assumed fraction of flipped labels (conservative DPO)")
    nll_coef: float = Field(0.0, ge=0, description="α: adds α·NLL of the chosen answer (summed over its tokens), which "
                                                   "keeps DPO from lowering the chosen answer's likelihood along with the "
                                                   "rejected one's (RPO)")


class IPOConfig(ComponentConfig):
    """IPO: squared distance of the log-ratio margin to 1/(2β)."""

    beta: float = Field(0.1, gt=0, description="β: the margin is regressed to 1/(2β)")


class BradleyTerryConfig(ComponentConfig):
    """Bradley–Terry reward modelling on the scalar score of each sequence."""


class DPOLoss:
    input = "logprob"
    needs_reference = True

    def __init__(self, config: DPOConfig):
        self.beta, self.eps, self.nll_coef = config.beta, config.label_smoothing, config.nll_coef

    def __call__(self, x_c: torch.Tensor, x_r: torch.Tensor) -> torch.Tensor:
        z = self.beta * (x_c - x_r)
        # x_c = log π_θ(chosen) − log π_ref(chosen): −x_c is the chosen NLL up to a constant (same gradient)
        return -(1 - self.eps) * F.logsigmoid(z) - self.eps * F.logsigmoid(-z) - self.nll_coef * x_c

    def rewards(self, x_c: torch.Tensor, x_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.beta * x_c, self.beta * x_r


class IPOLoss:
    input = "logprob"
    needs_reference = True

    def __init__(self, config: IPOConfig):
        self.beta = config.beta

    def __call__(self, x_c: torch.Tensor, x_r: torch.Tensor) -> torch.Tensor:
        return (x_c - x_r - 1 / (2 * self.beta)) ** 2

    def rewards(self, x_c: torch.Tensor, x_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.beta * x_c, self.beta * x_r


class BradleyTerryLoss:
    input = "score"
    needs_reference = False

    def __init__(self, config: BradleyTerryConfig):
        self.config = config

    def __call__(self, x_c: torch.Tensor, x_r: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid(x_c - x_r)

    def rewards(self, x_c: torch.Tensor, x_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x_c, x_r
