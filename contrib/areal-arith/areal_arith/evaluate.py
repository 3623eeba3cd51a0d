"""``areal-arith greedy MODEL DATA``: the exact-answer accuracy of a model's greedy answers
(and the answers themselves, for on-policy preference pairs: ``areal-arith pairs --rejected model``).

Each prompt is rendered as the ``rlvr`` workflow renders it (one user message, chat template,
generation prompt); the model answers greedily (at most ``max_new_tokens``), and the answer
scores 1 when it is exactly the total (the ``arith`` verifier). Batched with left padding.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_rows(data: str | Path, limit: int | None = None) -> list[dict]:
    return [json.loads(line) for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip()][:limit]


def greedy_answers(model_path: str | Path, rows: list[dict], max_new_tokens: int = 8, batch_size: int = 64) -> list[str]:
    """The model's greedy completion of each row's ``prompt``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    answers: list[str] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                                 add_generation_prompt=True) for r in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def greedy_accuracy(model_path: str | Path, data: str | Path, max_new_tokens: int = 8, batch_size: int = 64,
                    limit: int | None = None) -> float:
    """Fraction of the rows of ``data`` (JSONL with ``prompt``, ``answer``) answered exactly."""
    from areal_arith.reward import ArithReward, ArithRewardConfig

    rows = read_rows(data, limit)
    reward = ArithReward(ArithRewardConfig(name="arith"))
    answers = greedy_answers(model_path, rows, max_new_tokens, batch_size)
    return sum(reward(r["prompt"], a, r) for r, a in zip(rows, answers)) / len(rows)
