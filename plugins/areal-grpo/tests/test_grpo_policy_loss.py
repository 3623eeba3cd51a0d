"""The policy-loss extension point: registering, selecting, validating, reporting stats, the public API."""

import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

import areal_grpo
from areal_core.config.base import validate_section
from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_grpo import PolicyLossInput, plugin, policy_loss, register_policy_loss
from areal_grpo.policy_loss import BUILTIN_POLICY_LOSSES

# seq0 = [p, a, b], seq1 = [p, p, c, d, e]; log π_prox = -1 on a..e, π_θ/π_prox = RATIOS, A = -1 on seq0, +2 on seq1
LOSS_MASK = torch.tensor([0, 1, 1, 0, 0, 1, 1, 1], dtype=torch.float32)
RATIOS = torch.tensor([1.0, 1.5, 0.5, 1.0, 1.0, 1.0, 1.25, 0.9])
PROX = -LOSS_MASK
ADVANTAGES = torch.tensor([0, -1.0, -1.0, 0, 0, 2.0, 2.0, 2.0])


@pytest.fixture
def registry():
    return build_registry(extra_plugins=[(plugin, "areal-grpo (under test)")], entry_points=False)


@pytest.fixture
def isolated_losses(monkeypatch):
    """Losses a test registers are gone after it (the built-ins are registered first, and stay)."""
    import areal_grpo.losses  # noqa: F401

    monkeypatch.setattr(policy_loss, "_LOSSES", dict(policy_loss._LOSSES))


def run_policy_loss(algo):
    from areal_core.data.batch import SequenceBatch

    batch = SequenceBatch(torch.tensor([0, 3, 8]),
                          {"input_ids": torch.arange(8) + 3, "loss_mask": LOSS_MASK, "logprobs": PROX,
                           "prox_logprobs": PROX, "advantages": ADVANTAGES},
                          {"rewards": torch.zeros(2), "group_index": torch.tensor([0, 0])})
    mb = algo.off_policy_corrections(batch, prox_version=0)
    theta = (PROX + RATIOS.log() * LOSS_MASK).requires_grad_(True)
    loss, _ = algo.policy_loss_fn(theta, torch.zeros(8), mb)
    (grad,) = torch.autograd.grad(loss, theta)
    return loss, grad


def test_a_registered_loss_is_selected_by_name_and_reports_stats(registry, isolated_losses):
    seen = []

    @register_policy_loss("test_is_reinforce")
    def is_reinforce(x: PolicyLossInput) -> torch.Tensor:
        seen.append(x)
        x.stats.add_mean("actor/test_ratio", x.ratio, x.mask)
        x.stats.add_max("actor/test_ratio_max", x.ratio, x.mask)
        return -x.ratio.detach() * x.advantages * x.logprobs

    algo = registry.create("algorithm", "grpo", {"policy_loss": "test_is_reinforce"})
    loss, grad = run_policy_loss(algo)
    # -sg(r)·A·log π_θ on a..e: log π_θ = -1 + ln r
    #   a: -1.5·(-1)·(-1 + 0.405465) = -0.891802   b: -0.5·(-1)·(-1 - 0.693147) = -0.846574
    #   c: -1·2·(-1) = 2   d: -1.25·2·(-1 + 0.223144) = 1.942141   e: -0.9·2·(-1 - 0.105361) = 1.989650
    assert_close(loss, torch.tensor(-0.891802 - 0.846574 + 2 + 1.942141 + 1.989650))
    # gradient -sg(r)·A: [1.5, 0.5, -2, -2.5, -1.8] on a..e, 0 on the prompt
    assert_close(grad, torch.tensor([0, 1.5, 0.5, 0, 0, -2.0, -2.5, -1.8]))
    x = seen[0]
    assert x.config is algo.config and x.num_seqs == 2 and x.mask.tolist() == (LOSS_MASK > 0).tolist()
    stats = algo.step_stats.result()
    assert stats["actor/test_ratio"] == pytest.approx((1.5 + 0.5 + 1 + 1.25 + 0.9) / 5)
    assert stats["actor/test_ratio_max"] == pytest.approx(1.5)


def test_builtins_match_their_declared_names():
    import areal_grpo.losses  # noqa: F401 - registers the built-ins

    declared = {n: f"{f.__module__}:{f.__name__}" for n, f in policy_loss._LOSSES.items()
                if f.__module__ == "areal_grpo.losses"}
    assert declared == BUILTIN_POLICY_LOSSES


def test_an_installed_entry_point_is_selectable_before_its_module_is_imported(registry, isolated_losses, tmp_path,
                                                                            monkeypatch):
    """A package declaring [project.entry-points."areal_grpo.policy_losses"] (here a dist-info on sys.path)."""
    (tmp_path / "fake_policy_loss_pkg.py").write_text(
        "from areal_grpo import register_policy_loss\n\n\n@register_policy_loss('test_ep_loss')\n"
        "def test_ep_loss(x):\n    return -x.ratio * x.advantages\n")
    dist = tmp_path / "fake_policy_loss_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-policy-loss-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[areal_grpo.policy_losses]\n"
                                           "test_ep_loss = fake_policy_loss_pkg:test_ep_loss\n"
                                           "test_ep_broken = fake_policy_loss_pkg:no_such_function\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert {"test_ep_loss", "test_ep_broken"} <= set(areal_grpo.policy_loss_names())
        assert "fake_policy_loss_pkg" not in sys.modules
        loss, grad = run_policy_loss(registry.create("algorithm", "grpo", {"policy_loss": "test_ep_loss"}))
        # -r·A on a..e: 1.5 + 0.5 - 2 - 2.5 - 1.8 = -4.3; gradient -r·A
        assert_close(loss, torch.tensor(-4.3))
        assert_close(grad, torch.tensor([0, 1.5, 0.5, 0, 0, -2.0, -2.5, -1.8]))
        with pytest.raises(ArealError, match=r"'test_ep_broken' is declared as "
                                             r"'fake_policy_loss_pkg:no_such_function', which does not load"):
            registry.create("algorithm", "grpo", {"policy_loss": "test_ep_broken"})
    finally:
        sys.modules.pop("fake_policy_loss_pkg", None)


def test_unknown_policy_loss_is_a_config_error_naming_the_registered_ones(registry):
    model = registry.get("algorithm", "grpo").load_config_model()
    with pytest.raises(ArealError, match=r"algorithm.policy_loss.*unknown policy loss 'cispoo'.*clip, .*sapo"):
        validate_section(model, {"name": "grpo", "policy_loss": "cispoo"}, path="algorithm")


def test_a_name_registered_by_two_functions_is_an_error(isolated_losses):
    @register_policy_loss("test_twice")
    def first(x):
        return x.ratio

    register_policy_loss("test_twice")(first)  # the same function again (a module reloaded): fine

    def second(x):
        return x.ratio

    with pytest.raises(ArealError, match=r"'test_twice' is registered twice: by .*first and by .*second; rename"):
        register_policy_loss("test_twice")(second)


def test_a_loss_of_the_wrong_shape_is_an_error_naming_it(registry, isolated_losses):
    register_policy_loss("test_scalar")(lambda x: (-x.ratio * x.advantages).sum())
    algo = registry.create("algorithm", "grpo", {"policy_loss": "test_scalar"})
    with pytest.raises(ArealError, match=r"policy loss 'test_scalar' returned shape \(\); it must return one loss per "
                                         r"token, shape \(8,\)"):
        run_policy_loss(algo)


def test_dual_clip_needs_the_clip_loss(registry):
    model = registry.get("algorithm", "grpo").load_config_model()
    with pytest.raises(ArealError, match="dual_clip applies to policy_loss=clip only"):
        validate_section(model, {"name": "grpo", "policy_loss": "sapo", "dual_clip": 3.0}, path="algorithm")


def test_public_api_is_declared_and_importing_it_loads_no_torch():
    assert sorted(areal_grpo.__all__) == areal_grpo.__all__
    for name in areal_grpo.__all__:
        assert getattr(areal_grpo, name) is not None, name
    code = ("import sys, areal_grpo, areal_grpo.plugin, areal_grpo.presets; "
            "areal_grpo.presets.GRPOConfig(name='grpo', policy_loss='sapo'); "
            "assert 'torch' not in sys.modules, 'torch loaded'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
