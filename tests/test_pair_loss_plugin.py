"""A third-party plugin adds a pair loss through ``areal_register_pair_losses``; `areal dpo` configs select it by name."""

from __future__ import annotations

import pytest

from areal_core.config.loader import load_config
from areal_core.config.schema import DPOConfig
from areal_core.hookspecs import hookimpl
from areal_core.registry import Component, build_registry

torch = pytest.importorskip("torch")


def f64(*v):
    return torch.tensor(v, dtype=torch.float64)


class ThirdPartyLoss:
    """A pair loss from a plugin: hinge on the log-ratio margin."""

    input = "logprob"
    needs_reference = True

    def __init__(self, config):
        self.config = config

    def __call__(self, x_c, x_r):
        return torch.relu(1 - (x_c - x_r))

    def rewards(self, x_c, x_r):
        return x_c, x_r


class HingePlugin:
    @hookimpl
    def areal_register_pair_losses(self):
        return [Component("hinge", ThirdPartyLoss, None, "hinge on the log-ratio margin")]


def test_a_plugin_registers_a_pair_loss_by_name():
    registry = build_registry([(HingePlugin(), "hinge-plugin")], entry_points=False)
    assert registry.names("pair_loss") == ["bradley_terry", "dpo", "hinge", "ipo"]
    cfg = load_config(DPOConfig, overrides=["model_path=m", "actor.name=x", "train_dataset.path=d", "loss.name=hinge"],
                      env_prefix=None, registry=_with_engine(registry))
    loss = cfg.create("loss", registry=registry)
    assert isinstance(loss, ThirdPartyLoss) and float(loss(f64(0.25), f64(0.0))) == 0.75


def _with_engine(registry):
    """The config names an engine; validation only needs the name registered (nothing is built)."""
    registry.add(Component("x", object, None, "engine name for config validation", kind="train_engine"))
    return registry
