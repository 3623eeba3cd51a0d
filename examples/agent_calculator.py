"""The agent of examples/agent_calculator.sh, and the data it is trained on.

The agent is plain ``openai`` SDK code with a calculator tool; areal trains the model behind it
by giving it a ``base_url`` (the ``agent`` workflow of areal-agent)::

    user: 74+89=
    assistant: <tool_call>{"name": "calculator", "arguments": {"expression": "74+89"}}</tool_call>
    tool: 163
    assistant: 163                                    reward 1.0 when this is the total, else 0.0

``python examples/agent_calculator.py prepare OUT`` writes OUT/model (a 0.2 M-parameter Qwen2 with
a tokenizer trained on the template's text), OUT/valid.jsonl (200 held-out problems a+b, a and b
in 50..99), OUT/train.jsonl (the other 2300) and OUT/sft.jsonl. Every total has three digits, so
the model copies the digits at fixed distances: a tiny model learns that in ~1000 SFT steps.
The demonstrations come from a teacher that uses the calculator ``tool_rate`` (40%) of the time
and otherwise answers from memory with a guess in 100..198. After SFT the model can do both, and
its greedy answer is the guess (the more frequent demonstration), while sampling reaches the
calculator in about 4 of 8 runs, so every GRPO group sees that the tool pays. RL has to teach it
to use the tool.
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
TEMPLATE = "hermes_brief"  # tools listed as name(args): prompts of ~20 tokens (the workflow config names it too)


async def run(sample, base_url, api_key):
    """Answer ``sample["prompt"]``, calling the calculator when the model asks; 1.0 if right."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600.0)  # connect too: a loaded CPU stalls
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


def problems(rng: random.Random, n: int, exclude: set[str]) -> list[dict]:
    """``n`` distinct problems ``a+b=`` with a, b in 50..99 (so every total has 3 digits), none in ``exclude``."""
    out: list[dict] = []
    while len(out) < n:
        a, b = rng.randint(50, 99), rng.randint(50, 99)
        prompt = f"{a}+{b}="
        if prompt not in exclude:
            exclude.add(prompt)
            out.append({"prompt": prompt, "answer": str(a + b)})
    return out


def demonstrations(chat: ChatModel, rows: list[dict], rng: random.Random, tool_rate: float) -> list[dict]:
    """SFT rows (rendered prompt text, completion) of the teacher in the module docstring."""
    out = []
    for row in rows:
        user = [{"role": "user", "content": row["prompt"]}]
        if rng.random() < tool_rate:
            expression = row["prompt"].rstrip("=")
            call = {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}]}
            calling = chat.render(user + [call], TOOLS, False)
            prompt = chat.render(user, TOOLS, True)
            out.append({"prompt": prompt, "completion": calling[len(prompt):calling.rindex(chat.eos_text)]})
            after = user + [call, {"role": "tool", "tool_call_id": "c", "content": row["answer"]}]
            out.append({"prompt": chat.render(after, TOOLS, True), "completion": row["answer"]})
        else:  # from memory: the hundreds digit is always right, the rest a guess
            out.append({"prompt": chat.render(user, TOOLS, True), "completion": str(rng.randint(100, 198))})
    return out


def prepare(out: Path, seed: int = 0, size: str = "0.2m", tool_rate: float = 0.4, n_sft: int = 12000,
            n_valid: int = 200) -> None:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from areal_core.testing.tiny import make_tiny_model, make_tokenizer

    hf_logging.disable_progress_bar()
    rng = random.Random(f"{seed}/agent-calculator")
    seen: set[str] = set()
    valid = problems(rng, n_valid, seen)  # held out
    train = problems(rng, 2500 - n_valid, seen)  # every other problem: RL prompts, and what the teacher demonstrates
    sft = [rng.choice(train) for _ in range(n_sft)]
    for i, row in enumerate(valid):
        row["id"] = f"valid-{i}"
    for i, row in enumerate(train):
        row["id"] = f"train-{i}"
    # the tokenizer learns the template's text too, so its strings become few tokens
    draft = ChatModel(make_tokenizer(corpus=[r["prompt"] for r in train]), TEMPLATE)
    corpus = [r["prompt"] + r["completion"] for r in demonstrations(draft, train, rng, 1.0)]
    make_tiny_model(out / "model", size=size, seed=seed, corpus=corpus)
    chat = ChatModel(AutoTokenizer.from_pretrained(out / "model"), TEMPLATE)
    for name, rows in (("train", train), ("valid", valid), ("sft", demonstrations(chat, sft, rng, tool_rate))):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompt_len = len(chat.prompt_ids(None, [{"role": "user", "content": valid[0]["prompt"]}], TOOLS)[0])
    print(f"wrote {out}/model, train.jsonl, valid.jsonl, sft.jsonl (a first prompt is {prompt_len} tokens)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tool-rate", type=float, default=0.4, help="how often the teacher uses the calculator")
    parser.add_argument("--size", default="0.2m", help="tiny model size (areal_core.testing.tiny.SIZES)")
    parser.add_argument("--n-sft", type=int, default=12000, help="teacher demonstrations (problems)")
    parser.add_argument("--n-valid", type=int, default=200, help="held-out problems")
    args = parser.parse_args()
    prepare(args.out, size=args.size, tool_rate=args.tool_rate, n_sft=args.n_sft, n_valid=args.n_valid)
    sys.exit(0)
