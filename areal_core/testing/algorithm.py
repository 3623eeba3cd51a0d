"""The algorithm contract suite: what every ``algorithm`` component must do.

A plugin's test module subclasses :class:`AlgorithmContract`, once per registered name::

    import areal_grpo.plugin
    from areal_core.testing.algorithm import AlgorithmContract

    class TestDAPO(AlgorithmContract):
        plugin = areal_grpo.plugin
        component_name = "dapo"
        component_config = {"max_response_tokens": 16}
        train_engine_name = "fsdp"                  # an installed train engine the suite trains with
        drops_uniform_groups = True
        invalid_configs = [{"eps_clip": -0.1}]

Options (class attributes; the common ones, ``plugin``, ``component_name`` and
``component_config``, are :class:`~areal_core.testing.contract.ComponentContract`'s):

- ``drops_uniform_groups``: ``keep_group`` drops a group whose rewards are all equal (default False);
- ``uses_critic`` / ``uses_ref``: ``train_step`` needs a critic / reference engine (default False);
- ``invalid_configs``: sections (without ``name``) the config model must reject;
- ``train_engine_name`` (required), :meth:`AlgorithmContract.train_engine_config` (per role),
  ``tiny_size``: the engines the suite trains with and the tiny model they load.

``train_step`` runs against real train engines built through the registry of *installed*
plugins: ``train_engine_name`` (required: core names no engine; the plugin's ``test`` extra must
pull the package providing it) with the section :meth:`AlgorithmContract.train_engine_config`
returns for each role (actor, critic, ref) and a run context carrying ``model_path`` (a tiny HF
model of ``tiny_size`` written by the suite), ``seed`` and ``total_steps``. Override
``train_engine_config`` to fit another engine's config. What the batch holds and the rules an
algorithm follows (loss normalisation, stats, numerics) are in docs/write-an-algorithm.md.

Checked: keep_group keeps a group with different rewards and (per ``drops_uniform_groups``)
drops or keeps one whose rewards are all equal; the config model rejects each of
``invalid_configs`` with an error naming the ``algorithm`` section; ``train_step`` on a packed
batch of groups with unequal lengths, masked prompt tokens and a masked tool span returns finite
float stats, changes the actor's weights and leaves the input batch
untouched; an algorithm that needs a critic or reference engine (``uses_critic``,
``uses_ref``) fails with an ArealError when it is not given one.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch

from areal_core.api.protocols import Algorithm
from areal_core.api.types import Trajectory
from areal_core.config.base import validate_section
from areal_core.data.batch import SequenceBatch
from areal_core.errors import ArealError
from areal_core.registry import build_registry
from areal_core.testing.contract import ComponentContract
from areal_core.testing.engines import make_train_engine, run_context

# (group, prompt length, loss mask of the response, reward): unequal lengths, one group whose
# rewards are all equal, one response with a masked span (a tool output inside the response).
SAMPLES = [
    ("a", 4, [1, 1, 1], 1.0),
    ("a", 4, [1, 1, 1, 1, 1], 0.0),
    ("a", 4, [1, 1], 0.5),
    ("b", 6, [1, 1, 1, 1], 1.0),
    ("b", 6, [1], 1.0),
    ("c", 3, [1, 1, 0, 0, 1, 1], 0.0),
    ("c", 3, [1, 1, 1], 1.0),
]


def make_trajectories(vocab: int = 200, seed: int = 0) -> list[Trajectory]:
    """The trajectories of :data:`SAMPLES` with random token ids below ``vocab`` (version 0)."""
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for i, (group, prompt_len, response_mask, reward) in enumerate(SAMPLES):
        n = prompt_len + len(response_mask)
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        mask = [0] * prompt_len + response_mask
        trajs.append(Trajectory(
            input_ids=ids, loss_mask=mask, logprobs=[0.0] * n, versions=[0 if m else -1 for m in mask],
            reward=reward, group_id=group, sample_id=f"{group}{i}"))
    return trajs


class AlgorithmContract(ComponentContract):
    """Behaviour every algorithm shares. Subclass and set ``plugin``, ``component_name``,
    ``component_config`` and the expectations below (see the module docstring)."""

    kind: ClassVar[str] = "algorithm"
    protocol: ClassVar[type] = Algorithm

    drops_uniform_groups: ClassVar[bool] = False  # keep_group([...all rewards equal...]) is False
    uses_critic: ClassVar[bool] = False  # train_step needs a critic engine
    uses_ref: ClassVar[bool] = False  # train_step needs a reference engine
    invalid_configs: ClassVar[list[dict[str, Any]]] = []  # sections (without name) that must be rejected

    train_engine_name: ClassVar[str] = ""  # an installed train engine; set by the test class
    tiny_size: ClassVar[str] = "0.2m"

    def train_engine_config(self, role: str) -> dict[str, Any]:
        """The train-engine section for ``role`` ("actor", "critic" or "ref")."""
        return {"critic": role == "critic", "optimizer": {"lr": 1e-3}, "max_tokens_per_mb": 32}

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def model_path(cls, tmp_path_factory) -> str:
        from areal_core.testing.tiny import make_tiny_model

        return str(make_tiny_model(tmp_path_factory.mktemp("tiny_model"), size=cls.tiny_size))

    @pytest.fixture
    def make_engine(self, model_path: str):
        """Call ``make_engine(role)`` for a new initialized train engine (destroyed after the test)."""
        if not self.train_engine_name:
            pytest.fail(f"{type(self).__name__}: set train_engine_name to an installed train engine (e.g. the one "
                        f"your algorithm is meant for); the suite trains against it")
        registry = build_registry()
        run = run_context(model_path)
        engines = []

        def make(role: str):
            engine = make_train_engine(self.train_engine_name, self.train_engine_config(role), run, registry=registry)
            engines.append(engine)
            return engine

        yield make
        for engine in reversed(engines):
            engine.destroy()

    @pytest.fixture
    def engines(self, make_engine) -> dict[str, Any]:
        """The engines train_step gets: actor, plus critic and ref when the algorithm uses them."""
        built = {"actor": make_engine("actor")}
        if self.uses_critic:
            built["critic"] = make_engine("critic")
        if self.uses_ref:
            built["ref"] = make_engine("ref")
        return built

    @pytest.fixture
    def batch(self, engines) -> SequenceBatch:
        """The packed batch of :data:`SAMPLES`; behaviour logprobs are the actor's own, perturbed a little."""
        batch = SequenceBatch.from_trajectories(make_trajectories())
        g = torch.Generator().manual_seed(1)
        own = engines["actor"].forward(batch).float()
        noise = 0.05 * torch.randn(own.shape, generator=g)
        batch.tokens["logprobs"] = torch.where(batch["loss_mask"] > 0, own + noise, torch.zeros_like(own))
        return batch

    # -- keep_group ---------------------------------------------------------------------------

    def test_keep_group_keeps_group_with_different_rewards(self, component):
        group = [t for t in make_trajectories() if t.group_id == "a"]
        assert component.keep_group(group) is True

    def test_keep_group_on_uniform_rewards(self, component):
        group = [t for t in make_trajectories() if t.group_id == "b"]
        kept = component.keep_group(group)
        assert isinstance(kept, bool)
        assert kept is (not self.drops_uniform_groups), (
            f"{self.component_name}: keep_group on rewards {[t.reward for t in group]} returned {kept}; the test class "
            f"says drops_uniform_groups={self.drops_uniform_groups}")

    # -- config -------------------------------------------------------------------------------

    def test_invalid_configs_are_rejected(self, record):
        model = record.load_config_model()
        for bad in self.invalid_configs:
            with pytest.raises(ArealError, match=r"algorithm"):
                validate_section(model, {"name": record.name, **self.component_config, **bad}, path=self.kind)

    # -- train_step ---------------------------------------------------------------------------

    def test_train_step_updates_actor_and_returns_finite_stats(self, component, engines, batch):
        actor = engines["actor"]
        before = {k: v.detach().clone() for k, v in actor.named_full_weights()}
        snapshot = _snapshot(batch)

        stats = component.train_step(batch, actor, critic=engines.get("critic"), ref=engines.get("ref"))

        assert isinstance(stats, dict) and stats, f"{self.component_name}: train_step returned {stats!r}"
        bad = {k: v for k, v in stats.items() if not isinstance(v, float) or not math.isfinite(v)}
        assert not bad, f"{self.component_name}: stats that are not finite floats: {bad}"
        after = dict(actor.named_full_weights())
        assert any(not torch.equal(before[k], after[k]) for k in before), f"{self.component_name}: weights unchanged"
        assert _snapshot(batch).keys() == snapshot.keys(), f"{self.component_name}: train_step added input fields"
        changed = [k for k in snapshot if not torch.equal(snapshot[k], _snapshot(batch)[k])]
        assert not changed, f"{self.component_name}: train_step modified its input batch: {changed}"

    def test_train_step_requires_its_engines(self, component, engines, batch):
        if not (self.uses_critic or self.uses_ref):
            pytest.skip(f"{self.component_name} uses neither a critic nor a reference engine")
        if self.uses_critic:
            with pytest.raises(ArealError, match="critic"):
                component.train_step(batch, engines["actor"], critic=None, ref=engines.get("ref"))
        if self.uses_ref:
            with pytest.raises(ArealError, match="ref"):
                component.train_step(batch, engines["actor"], critic=engines.get("critic"), ref=None)


def _snapshot(batch: SequenceBatch) -> dict[str, torch.Tensor]:
    out = {"cu_seqlens": batch.cu_seqlens.clone()}
    out.update({f"tokens.{k}": v.clone() for k, v in batch.tokens.items()})
    out.update({f"seqs.{k}": v.clone() for k, v in batch.seqs.items()})
    return out
