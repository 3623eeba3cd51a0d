"""reinforce_baseline passes the algorithm contract suite and learns, on areal-fsdp's engine."""


import torch

import areal_example.plugin
from areal_core.api.types import Trajectory
from areal_core.data.batch import SequenceBatch
from areal_core.registry import build_registry
from areal_core.testing.algorithm import AlgorithmContract
from areal_core.testing.engines import make_train_engine, run_context


class TestReinforceBaseline(AlgorithmContract):
    plugin = areal_example.plugin
    train_engine_name = "fsdp"
    component_name = "reinforce_baseline"
    component_config = {"entropy_coef": 0.01}
    drops_uniform_groups = True
    invalid_configs = [{"baseline": "median"}, {"entropy_coef": -1.0}]


def test_rewarded_completion_becomes_more_likely(tmp_path):
    """Two completions of one prompt, rewards 1 and 0: after a few steps the first is likelier."""
    from areal_core.testing.tiny import make_tiny_model

    torch.manual_seed(0)
    registry = build_registry(extra_plugins=[(areal_example.plugin, "areal-example (test)")], entry_points=False)
    installed = build_registry()  # the engine comes from the installed areal-fsdp
    engine = make_train_engine("fsdp", {"optimizer": {"lr": 3e-3}}, run_context(make_tiny_model(tmp_path / "m")),
                               registry=installed)
    try:
        algo = registry.create("algorithm", "reinforce_baseline", {})
        prompt = [10, 11, 12, 13]
        good, bad = [40, 41, 42, 43], [80, 81, 82, 83]
        trajs = [Trajectory(prompt + c, [0] * 4 + [1] * 4, [0.0] * 8, [-1] * 4 + [0] * 4, r, group_id="g")
                 for c, r in ((good, 1.0), (bad, 0.0))]
        batch = SequenceBatch.from_trajectories(trajs)

        def completion_logprob():
            lp = engine.forward(batch)
            return [float(lp[s:e][4:].sum()) for s, e in zip(batch.cu_seqlens[:-1], batch.cu_seqlens[1:])]

        before = completion_logprob()
        for _ in range(5):
            stats = algo.train_step(batch, engine)
        after = completion_logprob()
        assert after[0] > before[0] + 0.5 and after[1] < before[1] - 0.5, (before, after)
        assert stats["advantage/abs_max"] == 0.5 and stats["reward/mean"] == 0.5
    finally:
        engine.destroy()
