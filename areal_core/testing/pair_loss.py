"""Contract suite for pair losses (``areal dpo`` / ``areal rm``): ``factory(config) -> PairLoss``.

Subclass :class:`PairLossContract` and name the component::

    class TestDPO(PairLossContract):
        plugin = areal_core.builtins
        component_name = "dpo"
        component_config = {"beta": 0.1}

Checked: ``input`` is ``"logprob"`` or ``"score"`` and ``needs_reference`` a bool; the loss is
one finite float64 value per pair, differentiable in both inputs, and does not depend on how
the pairs are batched (pair p's loss only sees pair p); ``rewards`` returns two [P] tensors
whose difference orders the pairs like the inputs' (the metrics' preference accuracy).
"""

from __future__ import annotations

import pytest

from areal_core.api.protocols import PairLoss
from areal_core.testing.contract import ComponentContract


def _inputs():
    import torch

    x_c = torch.tensor([-1.0, 0.5, 2.0, -3.0, 0.0], dtype=torch.float64)
    x_r = torch.tensor([-2.0, 1.5, 2.0, 1.0, -0.25], dtype=torch.float64)
    return x_c, x_r


class PairLossContract(ComponentContract):
    kind = "pair_loss"
    protocol = PairLoss

    def test_declares_its_input(self, component):
        assert component.input in ("logprob", "score"), f"input must be 'logprob' or 'score', got {component.input!r}"
        assert isinstance(component.needs_reference, bool)
        if component.needs_reference:
            assert component.input == "logprob", "a reference only makes sense for log-ratio inputs"

    def test_one_finite_float64_loss_per_pair_with_gradients(self, component):
        import torch

        x_c, x_r = (x.clone().requires_grad_() for x in _inputs())
        loss = component(x_c, x_r)
        assert loss.shape == x_c.shape and loss.dtype == torch.float64
        assert torch.isfinite(loss).all()
        loss.sum().backward()
        assert x_c.grad is not None and x_r.grad is not None
        assert torch.isfinite(x_c.grad).all() and torch.isfinite(x_r.grad).all()

    def test_pairs_are_independent(self, component):
        import torch

        x_c, x_r = _inputs()
        whole = component(x_c, x_r)
        one_by_one = torch.cat([component(x_c[i:i + 1], x_r[i:i + 1]) for i in range(len(x_c))])
        torch.testing.assert_close(one_by_one, whole)

    def test_reward_margins_order_pairs_like_the_inputs(self, component):
        x_c, x_r = _inputs()
        reward_c, reward_r = component.rewards(x_c, x_r)
        assert reward_c.shape == reward_r.shape == x_c.shape
        assert ((reward_c - reward_r).sign() == (x_c - x_r).sign()).all()

    @pytest.mark.parametrize("p", [1, 7])
    def test_any_batch_size(self, component, p):
        import torch

        loss = component(torch.zeros(p, dtype=torch.float64), torch.zeros(p, dtype=torch.float64))
        assert loss.shape == (p,)
