"""train_step end to end on the fsdp engine (one process): schedule, learning signal, stats."""

import pytest
import torch

from areal_core.data.batch import SequenceBatch
from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_core.testing.algorithm import make_trajectories
from areal_core.testing.engines import make_train_engine, run_context
from areal_core.testing.tiny import make_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny"), size="0.2m"))


@pytest.fixture
def registry():
    return build_registry()


@pytest.fixture
def make_engine(registry, model_path):
    run = run_context(model_path)
    engines = []

    def make(critic=False, lr=1e-3):
        engine = make_train_engine("fsdp", {"critic": critic, "optimizer": {"lr": lr}, "max_tokens_per_mb": 32}, run,
                                   registry=registry)
        engines.append(engine)
        return engine

    yield make
    for engine in reversed(engines):
        engine.destroy()


def on_policy_batch(actor) -> SequenceBatch:
    batch = SequenceBatch.from_trajectories(make_trajectories())
    batch.tokens["logprobs"] = torch.where(batch["loss_mask"] > 0, actor.forward(batch), 0.0)
    return batch


def test_minibatches_and_epochs_step_the_actor(registry, make_engine):
    actor = make_engine()
    algo = registry.create("algorithm", "grpo", {"n_minibatches": 3, "ppo_epochs": 2})
    batch = on_policy_batch(actor)
    parts = algo.minibatch_indices(batch.seqlens.tolist())
    # lengths [7, 9, 6, 10, 7, 9, 6], longest first to the lightest part (ties: the first):
    # seq3 (10) -> p0, seq1 (9) -> p1, seq5 (9) -> p2, seq0 (7) -> p1 (16), seq4 (7) -> p2 (16),
    # seq2 (6) -> p0 (16), seq6 (6) -> p0 (22); each part keeps batch order
    assert parts == [[2, 3, 6], [0, 1], [4, 5]]
    optimizer_steps = []
    train_batch = actor.train_batch
    actor.train_batch = lambda *args: optimizer_steps.append(1) or train_batch(*args)
    stats = algo.train_step(batch, actor)
    assert len(optimizer_steps) == 6  # 3 minibatches · 2 epochs optimizer steps
    assert stats["n_seqs"] == 7.0 and stats["n_loss_tokens"] == 22.0
    for key in ("reward/mean", "advantage/std", "actor/clip_fraction", "actor/approx_kl", "actor/entropy",
                "behav_weight/max", "behav_weight/masked_fraction", "actor/grad_norm", "version_lag/mean"):
        assert key in stats, key
    # later minibatches and the second epoch see π_θ ≠ π_prox
    assert stats["actor/approx_kl"] > 0


@pytest.mark.parametrize("name,config", [
    ("grpo", {}),
    ("grpo", {"prox_logprobs": "loglinear"}),
    ("rloo", {}),
    ("gspo", {"eps_clip": 0.2, "eps_clip_higher": 0.2}),
    ("sapo", {}),
])
def test_repeated_steps_favour_rewarded_responses(registry, make_engine, name, config):
    actor = make_engine(lr=1e-2)
    algo = registry.create("algorithm", name, config)
    batch = on_policy_batch(actor)
    adv = algo.compute_advantages(batch)["advantages"]
    before = actor.forward(batch)
    for step in range(4):
        algo.train_step(batch, actor)
        actor.run.weight_version.set(step + 1)  # as the trainer does once the servers have the weights
    change = actor.forward(batch) - before
    # logprobs of tokens with positive advantage go up, with negative advantage go down (on average)
    assert change[adv > 0].mean() > 0 > change[adv < 0].mean()


def test_ppo_trains_the_critic_towards_returns(registry, make_engine):
    actor, critic = make_engine(), make_engine(critic=True, lr=1e-2)
    algo = registry.create("algorithm", "ppo", {"value_clip": None})
    batch = on_policy_batch(actor)
    losses = [algo.train_step(batch, actor, critic=critic)["critic/value_loss"] for _ in range(4)]
    assert losses[-1] < losses[0]


def test_more_minibatches_than_sequences_fails_before_any_work(registry, make_engine):
    actor = make_engine()
    algo = registry.create("algorithm", "grpo", {"n_minibatches": 8})
    before = {k: v.clone() for k, v in actor.named_full_weights()}
    with pytest.raises(ArealError, match="n_minibatches=8 but the batch has only 7 sequences"):
        algo.train_step(on_policy_batch(actor), actor)
    assert all(torch.equal(before[k], v) for k, v in actor.named_full_weights())
