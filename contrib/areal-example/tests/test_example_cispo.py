"""cispo passes the algorithm contract suite (areal-fsdp engine), its loss matches the paper, any preset selects it."""

import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

import areal_example.plugin
from areal_core.data.batch import SequenceBatch
from areal_core.registry import build_registry
from areal_core.testing.algorithm import AlgorithmContract


class TestCISPO(AlgorithmContract):
    plugin = areal_example.plugin
    component_name = "cispo"
    component_config = {"eps_clip_higher": 0.3}
    train_engine_name = "fsdp"
    invalid_configs = [{"policy_loss": "cispo_typo"}, {"eps_clip_higher": -0.1}]


@pytest.fixture
def cispo():
    registry = build_registry(extra_plugins=[(areal_example.plugin, "areal-example (test)")], entry_points=False)
    return registry.create("algorithm", "cispo", {"eps_clip_higher": 0.2})


def test_capped_stop_gradient_weight_times_advantage_times_logprob(cispo):
    # seq0 = [p, a, b], seq1 = [p, c, d]; log π_prox = -1 on a..d; r = π_θ/π_prox = [1.5, 0.5, 1.0, 1.25]; A = -1, +2
    mask = torch.tensor([0, 1, 1, 0, 1, 1], dtype=torch.float32)
    prox = -mask
    ratios = torch.tensor([1.0, 1.5, 0.5, 1.0, 1.0, 1.25])
    batch = SequenceBatch(torch.tensor([0, 3, 6]),
                          {"input_ids": torch.arange(6) + 3, "loss_mask": mask, "logprobs": prox,
                           "prox_logprobs": prox, "advantages": torch.tensor([0, -1.0, -1.0, 0, 2.0, 2.0])},
                          {"rewards": torch.zeros(2), "group_index": torch.tensor([0, 0])})
    mb = cispo.off_policy_corrections(batch, prox_version=0)
    theta = (prox + ratios.log() * mask).requires_grad_(True)
    loss, _ = cispo.policy_loss_fn(theta, torch.zeros(6), mb)
    (grad,) = torch.autograd.grad(loss, theta)
    # r̂ = min(r, 1.2) = [1.2, 0.5, 1, 1.2]; token loss -r̂·A·log π_θ with log π_θ = -1 + ln r:
    #   a: -1.2·(-1)·(-1 + ln 1.5) = -0.713442   b: -0.5·(-1)·(-1 - ln 2) = -0.846574
    #   c: -1·2·(-1) = 2                         d: -1.2·2·(-1 + ln 1.25) = 1.864455
    assert_close(loss, torch.tensor(-0.713442 - 0.846574 + 2 + 1.864455))
    # the gradient -r̂·A of every token, capped ones included (PPO's clip would give a and d 0)
    assert_close(grad, torch.tensor([0, 1.2, 0.5, 0, -2.0, -2.4]))
    assert cispo.step_stats.result()["actor/cispo_capped_fraction"] == 0.5  # a and d of 4


def test_any_ppo_preset_selects_cispo_through_the_entry_point():
    """In a fresh process nothing imported areal_example.cispo: the installed entry point finds it."""
    code = ("import sys; from areal_core.registry import build_registry; "
            "algo = build_registry().create('algorithm', 'grpo', {'policy_loss': 'cispo'}); "
            "print(algo.policy_loss.__module__, algo.policy_loss.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["areal_example.cispo", "cispo"]
