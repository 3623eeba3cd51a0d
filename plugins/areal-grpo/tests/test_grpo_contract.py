"""The algorithm contract suite, run for every preset against the fsdp train engine (one process)."""

import areal_grpo.plugin
from areal_core.testing.algorithm import AlgorithmContract


class PresetContract(AlgorithmContract):
    plugin = areal_grpo.plugin
    train_engine_name = "fsdp"
    invalid_configs = [
        {"eps_clip": -0.1},
        {"dual_clip": 0.5},
        {"gamma": 1.5},
        {"reward_norm_mean": "median"},
        {"behav_weight_lower": 6.0, "behav_weight_upper": 5.0},
        {"m2_threshold": 0.04, "prox_logprobs": "loglinear"},
        {"overlong_buffer_ratio": 0.2, "max_response_tokens": None},
        {"loss_aggregation": "token_sum_norm"},
        {"n_minibatches": 0},
        {"policy_loss": "nope"},
    ]


class TestGRPO(PresetContract):
    component_name = "grpo"
    component_config = {"n_minibatches": 2, "ppo_epochs": 2}


class TestDrGRPO(PresetContract):
    component_name = "dr_grpo"


class TestLitePPO(PresetContract):
    component_name = "lite_ppo"


class TestRLOO(PresetContract):
    component_name = "rloo"


class TestReinforcePP(PresetContract):
    component_name = "reinforce_pp"
    uses_ref = True


class TestPPO(PresetContract):
    component_name = "ppo"
    component_config = {"n_minibatches": 2}
    uses_critic = True


class TestDAPO(PresetContract):
    component_name = "dapo"
    component_config = {"max_response_tokens": 6}
    drops_uniform_groups = True
    invalid_configs = PresetContract.invalid_configs + [{"max_response_tokens": 0}, {"max_response_tokens": None}]


class TestGSPO(PresetContract):
    component_name = "gspo"


class TestSAPO(PresetContract):
    component_name = "sapo"


class TestM2PO(PresetContract):
    component_name = "m2po"


def test_presets_change_only_the_documented_defaults():
    """The table in areal_grpo/presets.py and docs/algorithms.md, checked against the models."""
    from areal_grpo.config import PPOConfig
    from areal_grpo.presets import PRESETS

    documented = {
        "grpo": {},
        "dr_grpo": {"reward_norm_std": "none"},
        "lite_ppo": {"reward_norm_std": "batch"},
        "rloo": {"reward_norm_leave_one_out": True, "reward_norm_std": "none"},
        "reinforce_pp": {"reward_norm_mean": "none", "reward_norm_std": "none", "kl_reward_coef": 0.01,
                         "advantage_norm": True},
        "ppo": {"reward_norm_mean": "none", "reward_norm_std": "none", "gae_lambda": 0.95, "advantage_norm": True,
                "use_critic": True},
        "dapo": {"max_response_tokens": "required", "overlong_buffer_ratio": 0.2, "eps_clip_higher": 0.28,
                 "drop_uniform_groups": True},
        "gspo": {"importance_level": "sequence", "behav_weight_level": "sequence", "eps_clip": 3e-4,
                 "eps_clip_higher": 4e-4, "loss_aggregation": "seq_mean"},
        "sapo": {"policy_loss": "sapo"},
        "m2po": {"m2_threshold": 0.04},
    }
    base = PPOConfig.model_fields
    for name, (model, _) in PRESETS.items():
        changed = {k: "required" if f.is_required() else f.default for k, f in model.model_fields.items()
                   if k != "name" and (f.is_required() or f.default != base[k].default)}
        assert changed == documented[name], name
        # constraints and descriptions survive the new defaults
        assert all(model.model_fields[k].description == base[k].description for k in base), name
        assert model.model_fields["eps_clip"].metadata == base["eps_clip"].metadata, name
