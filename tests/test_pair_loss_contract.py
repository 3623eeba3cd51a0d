"""The built-in pair losses pass the pair loss contract suite."""

import pytest

pytest.importorskip("torch")

import areal_core.builtins
from areal_core.testing.pair_loss import PairLossContract


class TestDPO(PairLossContract):
    plugin = areal_core.builtins
    component_name = "dpo"
    component_config = {"beta": 0.1, "label_smoothing": 0.1, "nll_coef": 0.5}


class TestIPO(PairLossContract):
    plugin = areal_core.builtins
    component_name = "ipo"


class TestBradleyTerry(PairLossContract):
    plugin = areal_core.builtins
    component_name = "bradley_terry"
