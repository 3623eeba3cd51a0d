"""``areal-arith``: the quickstart task's data and its evaluation, offline.

    areal-arith prepare OUT          the model and datasets below
    areal-arith pairs OUT            OUT/pairs_{over,either,far,model}_{train,valid}.jsonl: preference pairs of
                                     OUT/train.jsonl and OUT/valid.jsonl (chosen = the right total)
    areal-arith greedy MODEL DATA    exact-answer accuracy of MODEL's greedy answers on DATA

``prepare`` writes:

    OUT/model/        a tiny Qwen2 causal LM (3.1 M parameters by default, random init) + byte-level BPE tokenizer trained on
                      this task's text (areal_core.testing.tiny); digits are single tokens
    OUT/train.jsonl   RL prompts with answers          OUT/valid.jsonl  held-out prompts
    OUT/sft.jsonl     noisy-teacher demonstrations (see areal_arith.task)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from areal_arith.task import (
    REJECTED,
    make_splits,
    model_pairs,
    preference_pairs,
    tokenizer_corpus,
    write_jsonl,
)


def prepare(out: Path, seed: int = 0, size: str = "3m", n_train: int = 4000, n_valid: int = 200,
            n_sft: int = 20000, teacher_accuracy: float = 0.2, teacher_error: str = "over") -> Path:
    """Write the model and the three splits under ``out``; returns ``out``."""
    from transformers.utils import logging as hf_logging

    from areal_core.testing.tiny import make_tiny_model

    hf_logging.disable_progress_bar()
    out = Path(out)
    splits = make_splits(seed=seed, n_train=n_train, n_valid=n_valid, n_sft=n_sft, teacher_accuracy=teacher_accuracy,
                         teacher_error=teacher_error)
    for name, rows in splits.items():
        write_jsonl(rows, out / f"{name}.jsonl")
    make_tiny_model(out / "model", size=size, seed=seed, corpus=tokenizer_corpus(seed))
    return out


def write_pairs(out: Path, rejected: str, seed: int, model: Path | None = None, n_train: int | None = None) -> int:
    from areal_arith.evaluate import greedy_answers, read_rows

    if (rejected == "model") != (model is not None):
        raise SystemExit("areal-arith pairs: --model goes with --rejected model (and only with it)")
    for split in ("train", "valid"):
        source = out / f"{split}.jsonl"
        if not source.is_file():
            raise SystemExit(f"areal-arith pairs: {source} does not exist (run `areal-arith prepare {out}` first)")
        rows = read_rows(source, n_train if split == "train" else None)
        pairs = (model_pairs(rows, greedy_answers(model, rows)) if model is not None
                 else preference_pairs(rows, seed=seed, rejected=rejected))
        write_jsonl(pairs, out / f"pairs_{rejected}_{split}.jsonl")
    print(f"wrote {out}/pairs_{rejected}_train.jsonl, {out}/pairs_{rejected}_valid.jsonl")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="areal-arith", description="the sums-of-digits task for areal")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="write a tiny model and the train/valid/sft datasets")
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the model's initial weights")
    p.add_argument("--size", default="3m", choices=["0.2m", "3m", "18m"], help="tiny model size")
    p.add_argument("--n-train", type=int, default=4000, help="RL prompts")
    p.add_argument("--n-valid", type=int, default=200, help="held-out prompts")
    p.add_argument("--n-sft", type=int, default=20000, help="teacher demonstrations")
    p.add_argument("--teacher-accuracy", type=float, default=0.2, help="how often the teacher's total is right")
    p.add_argument("--teacher-error", default="over", choices=["over", "either"],
                   help="the teacher's wrong totals: one too many (over) or off by one either way (either)")
    p = commands.add_parser("pairs", help="preference pairs of OUT/train.jsonl and OUT/valid.jsonl")
    p.add_argument("out", type=Path, help="the directory `prepare` wrote")
    p.add_argument("--rejected", default="either", choices=REJECTED,
                   help="the rejected total: one too many (over), off by one either way (either), at least 3 "
                        "away (far), or the wrong greedy answers of --model (model: on-policy pairs)")
    p.add_argument("--model", type=Path, help="with --rejected model: the model whose mistakes are rejected")
    p.add_argument("--n-train", type=int, default=None, help="use the first N training problems only")
    p.add_argument("--seed", type=int, default=0, help="seed of the rejected totals")
    p = commands.add_parser("greedy", help="exact-answer accuracy of a model's greedy answers")
    p.add_argument("model", type=Path, help="HF model directory")
    p.add_argument("data", type=Path, help="JSONL rows with prompt and answer (e.g. OUT/valid.jsonl)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="answer length limit")
    args = parser.parse_args(argv)
    if args.command == "pairs":
        return write_pairs(args.out, args.rejected, args.seed, args.model, args.n_train)
    if args.command == "greedy":
        from areal_arith.evaluate import greedy_accuracy

        accuracy = greedy_accuracy(args.model, args.data, max_new_tokens=args.max_new_tokens)
        print(f"greedy accuracy {accuracy:.3f} on {args.data}")
        return 0
    out = prepare(args.out, seed=args.seed, size=args.size, n_train=args.n_train, n_valid=args.n_valid,
                  n_sft=args.n_sft, teacher_accuracy=args.teacher_accuracy, teacher_error=args.teacher_error)
    print(f"wrote {out}/model, {out}/train.jsonl, {out}/valid.jsonl, {out}/sft.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
