"""The agent of examples/agent_calculator.sh, and the data it is trained on.

The agent is plain ``openai`` SDK code with a calculator tool; areal trains the model behind it
by giving it a ``base_url`` (the ``agent`` workflow of areal-agent)::

    user: 3+5+2=
    assistant: <tool_call>{"name": "calculator", "arguments": {"expression": "3+5+2"}}</tool_call>
    tool: 10
    assistant: 10                                     reward 1.0 when this is the total, else 0.0

``python examples/agent_calculator.py prepare OUT`` writes OUT/model (a tiny Qwen2 with a tokenizer
that knows the template's text), OUT/train.jsonl, OUT/valid.jsonl (areal-arith's problems) and
OUT/sft.jsonl. The SFT demonstrations come from a teacher that uses the calculator only
``tool_rate`` of the time (30%) and otherwise answers from memory, right 20% of the time. After
SFT the model can do both: its greedy answer is the memorised guess, while sampling reaches the
calculator often enough that every GRPO group of 8 sees the difference. RL has to teach it to
use the tool.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from openai import AsyncOpenAI

from areal_agent.chat import ChatModel
from areal_agent.tools import TOOL_SPECS, calculate

TOOLS = [TOOL_SPECS["calculator"]]


async def run(sample, base_url, api_key):
    """Answer ``sample["prompt"]``, calling the calculator when the model asks; 1.0 if right."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    messages = [{"role": "user", "content": sample["prompt"]}]
    for _ in range(2):
        resp = await client.chat.completions.create(model="areal", messages=messages, tools=TOOLS, max_tokens=40)
        msg = resp.choices[0].message
        if not msg.tool_calls:
            return 1.0 if (msg.content or "").strip() == str(sample["answer"]) else 0.0
        messages.append(msg.model_dump(exclude_none=True))
        for tc in msg.tool_calls:
            try:
                result = str(calculate(json.loads(tc.function.arguments)["expression"]))
            except (ValueError, KeyError, TypeError) as exc:
                result = f"error: {exc}"
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": result})
    return 0.0


def tool_call_text(expression: str) -> str:
    return '<tool_call>\n' + json.dumps({"name": "calculator", "arguments": {"expression": expression}}) + '\n</tool_call>'


def demonstrations(chat: ChatModel, rows: list[dict], rng: random.Random, tool_rate: float, accuracy: float) -> list[dict]:
    """SFT rows (rendered prompt text, completion) from the teacher described in the module docstring."""
    out = []
    for row in rows:
        user = [{"role": "user", "content": row["prompt"]}]
        answer = int(calculate(row["prompt"].rstrip("=")))
        if rng.random() < tool_rate:
            expression = row["prompt"].rstrip("=")
            call = {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}]}
            out.append({"prompt": chat.render(user, TOOLS, True), "completion": tool_call_text(expression)})
            after = user + [call, {"role": "tool", "tool_call_id": "c", "content": str(answer)}]
            out.append({"prompt": chat.render(after, TOOLS, True), "completion": str(answer)})
        else:
            guess = answer if rng.random() < accuracy else answer + 1
            out.append({"prompt": chat.render(user, TOOLS, True), "completion": str(guess)})
    return out


def prepare(out: Path, seed: int = 0, size: str = "3m", tool_rate: float = 0.3, accuracy: float = 0.2) -> None:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from areal_arith.task import make_splits, tokenizer_corpus, write_jsonl
    from areal_core.testing.tiny import make_tokenizer, make_tiny_model

    hf_logging.disable_progress_bar()
    splits = make_splits(seed=seed, n_train=4000, n_valid=100, n_sft=12000)
    rng = random.Random(f"{seed}/agent-sft")
    # the tokenizer learns the template's text too, so a prompt is ~60 tokens instead of ~300 bytes
    draft = ChatModel(make_tokenizer(corpus=tokenizer_corpus(seed)), "hermes")
    corpus = tokenizer_corpus(seed) + [r["prompt"] + r["completion"]
                                       for r in demonstrations(draft, splits["sft"][:400], rng, 1.0, 1.0)]
    make_tiny_model(out / "model", size=size, seed=seed, corpus=corpus)
    chat = ChatModel(AutoTokenizer.from_pretrained(out / "model"), "hermes")
    write_jsonl(splits["train"], out / "train.jsonl")
    write_jsonl(splits["valid"], out / "valid.jsonl")
    write_jsonl(demonstrations(chat, splits["sft"], rng, tool_rate, accuracy), out / "sft.jsonl")
    prompt_len = len(chat.prompt_ids(None, [{"role": "user", "content": "3+5+2="}], TOOLS)[0])
    print(f"wrote {out}/model, train.jsonl, valid.jsonl, sft.jsonl (a first prompt is {prompt_len} tokens)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tool-rate", type=float, default=0.3, help="how often the teacher uses the calculator")
    args = parser.parse_args()
    prepare(args.out, tool_rate=args.tool_rate)
    sys.exit(0)
