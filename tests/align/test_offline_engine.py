"""The offline loop on the fsdp engine: the pair step's gradient, recovery, and 2 ranks = 1 rank."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("areal_fsdp")
torch = pytest.importorskip("torch")

from areal_core.config.loader import load_config
from areal_core.config.schema import DPOConfig, RMConfig, SFTConfig
from areal_core.trainer import pairs as pairs_module
from areal_core.trainer.offline import run_offline

CONFIGS = {"sft": SFTConfig, "dpo": DPOConfig, "rm": RMConfig}
STEPS = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from areal_core.testing.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("offline")
    model = make_tiny_model(root / "model", size="0.2m")
    rows = [{"id": f"p{i}", "prompt": f"{i % 7}+{i % 5}=", "chosen": str(i % 7 + i % 5),
             "rejected": str(i % 7 + i % 5 + 1 + i % 3), "completion": str(i % 7 + i % 5)} for i in range(40)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    (root / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    return root, model


def config(command, data, trial, *extra):
    root, model = data
    args = [f"fileroot={root / 'runs'}", f"model_path={model}", f"train_dataset.path={root / 'train.jsonl'}",
            f"valid_dataset.path={root / 'valid.jsonl'}", "actor.name=fsdp", "actor.optimizer.lr=3e-3",
            "actor.max_tokens_per_mb=24", f"trainer.total_steps={STEPS}", "trainer.batch_size=6",
            "trainer.eval_every=3", f"trial_name={trial}", *extra]
    if command == "rm":
        args.append("actor.critic=true")
    return load_config(CONFIGS[command], overrides=args, env_prefix=None)


def metric_rows(out):
    rows = [json.loads(line) for line in (out.parent / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("timing/", "time")) and not k.endswith("tokens_per_s")}
            for r in rows]


def weights(out):
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


def assert_same_run(a, b, atol, weights_atol=None, ignore=()):
    rows_a, rows_b = metric_rows(a), metric_rows(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == list(range(STEPS + 1))
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys()
        for key in (k for k in ra if not k.endswith(ignore)):
            assert rb[key] == pytest.approx(ra[key], abs=atol, rel=atol), (ra["step"], key)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in (n for n in wa if n not in ignore):
        torch.testing.assert_close(wb[name], wa[name], atol=weights_atol or atol, rtol=0)


# ---------------------------------------------------------------------- the gradient of a pair step
def direct_pair_loss(model, pairs, loss, input_kind, ref):
    """The pair loss computed the obvious way: each sequence alone through the HF model."""
    xs = []
    for ids, mask in (seq for pair in pairs for seq in pair):
        ids_t = torch.tensor([ids])
        logits = model(input_ids=ids_t).logits[0]
        if input_kind == "score":
            xs.append(logits[-1, 0].double())
        else:
            logp = torch.log_softmax(logits[:-1].float(), -1).gather(-1, ids_t[0, 1:, None])[:, 0]
            xs.append((logp.double() * torch.tensor(mask[1:], dtype=torch.float64)).sum())
    x = torch.stack(xs).view(-1, 2)
    if ref is not None:
        x = x - ref
    return loss(x[:, 0], x[:, 1]).mean()


@pytest.mark.parametrize("command", ["dpo", "rm"])
def test_pair_step_follows_the_pair_loss_gradient(data, tmp_path, command):
    """Pairs split over micro-batches (24-token budget) still get exactly ∇ of the pair loss."""
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from areal_core.data.dataset import load_rows

    cfg = config(command, data, "grad")
    tokenizer = AutoTokenizer.from_pretrained(cfg.run.model_path)
    objective = pairs_module.PairObjective(cfg, tokenizer, command)
    rows = load_rows(cfg.run.train_dataset)[:6]
    examples = [objective.encode(r, "row") for r in rows]
    from areal_core.api.types import RunContext

    engine = cfg.create("actor", run=RunContext(cfg.run.model_path, 1, STEPS, tmp_path))
    engine.initialize()
    try:
        ref = objective._reference(engine, examples, 6) if objective.loss.needs_reference else None
        objective.ref_train = ref
        engine.export_hf(str(tmp_path / "before"))  # the weights the step starts from
        stats = objective.train_step(engine, examples, list(range(6)))
    finally:
        engine.destroy()
    cls = AutoModelForTokenClassification if command == "rm" else AutoModelForCausalLM
    model = cls.from_pretrained(tmp_path / "before", dtype=torch.float32, attn_implementation="eager")
    direct = direct_pair_loss(model, examples, objective.loss, objective.input, ref)
    direct.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(model.parameters()), float("inf"))
    assert stats[f"{command}/loss"] == pytest.approx(float(direct), rel=1e-5)
    assert stats[f"{command}/grad_norm"] == pytest.approx(float(norm), rel=1e-4)


# ---------------------------------------------------------------------- recovery
@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_killed_then_recovered_equals_uninterrupted(data, monkeypatch, command):
    whole = run_offline(command, config(command, data, f"{command}-whole", "trainer.checkpoint_every=2"))

    objective_cls = pairs_module.PairObjective if command == "dpo" else __import__(
        "areal_core.trainer.sft", fromlist=["SFTObjective"]).SFTObjective
    real_step, calls = objective_cls.train_step, []

    def dies_at_step_5(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real_step(self, *args)

    monkeypatch.setattr(objective_cls, "train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_offline(command, config(command, data, f"{command}-killed", "trainer.checkpoint_every=2"))
    monkeypatch.setattr(objective_cls, "train_step", real_step)
    killed_dir = data[0] / "runs" / f"areal-{command}" / f"{command}-killed"
    assert [json.loads(x)["step"] for x in (killed_dir / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]
    resumed = run_offline(command, config(command, data, f"{command}-killed", "trainer.checkpoint_every=2",
                                          "recover=auto"))
    assert_same_run(whole, resumed, atol=1e-6)


# ---------------------------------------------------------------------- data parallelism
@pytest.mark.parametrize("command", ["sft", "dpo", "rm"])
def test_two_ranks_equal_one_rank(data, command):
    one = run_offline(command, config(command, data, f"{command}-one", "actor.optimizer.lr=1e-3"))
    two = run_offline(command, config(command, data, f"{command}-two", "actor.optimizer.lr=1e-3", "trainer.ranks=2"))
    # Adam divides by sqrt(v): on an element whose gradient is near zero, the ~1e-7 relative
    # difference of a 2-rank gradient sum becomes up to ~1e-5 of its 6 updates (lr 1e-3, each ≤ lr).
    # The reward model's score bias has an exactly zero gradient (Bradley-Terry sees only score
    # differences), so Adam turns the rounding noise of that zero (summed in another order on 2
    # ranks) into lr-sized steps: the bias, and with it the raw scores, differ; everything the
    # loss sees (loss, margins, accuracy, gradient norm, all other weights) agrees.
    ignore = ("score.bias", "reward_chosen", "reward_rejected") if command == "rm" else ()
    assert_same_run(one, two, atol=2e-5, weights_atol=1e-4, ignore=ignore)
