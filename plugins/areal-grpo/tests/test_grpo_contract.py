"""The algorithm contract suite, run for every preset against the fsdp train engine (one process)."""

import areal_grpo.plugin
from areal_core.testing.algorithm import AlgorithmContract


class PresetContract(AlgorithmContract):
    plugin = areal_grpo.plugin
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


class TestGSPO(PresetContract):
    component_name = "gspo"


class TestSAPO(PresetContract):
    component_name = "sapo"


class TestM2PO(PresetContract):
    component_name = "m2po"
