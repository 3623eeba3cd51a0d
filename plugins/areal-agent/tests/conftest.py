"""Shared fixtures: a tiny model taught one tool-calling habit, served by areal's embedded server.

The model is a real (0.2m-parameter) Qwen2 network, trained here for a few seconds so that, with
the ``hermes`` template, greedy decoding answers

    a user turn      -> <tool_call>\\n{"name": "add", "arguments": {"a": 2, "b": 3}}\\n</tool_call><|im_end|>
    a tool result    -> The answer is 5.<|im_end|>

whatever the system prompt, tools and user text are. The proxy tests then drive real generation
(embedded server + RolloutClient) through real clients.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOOL_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
FINAL = "The answer is 5."
ADD_TOOL = {"type": "function", "function": {"name": "add", "description": "Add two integers.",
                                             "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                                             "b": {"type": "integer"}},
                                                            "required": ["a", "b"]}}}


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(["what", "is", "two", "plus", "three", "add", "numbers", "please", "sum", "the",
                                "tool", "agent", "helpful", "you", "are", "a", "math", "answer", "use"]) for _ in range(n))


def _conversations(chat, rng: random.Random, n: int):
    """(prompt ids, target ids) pairs rendered exactly as the proxy renders them."""
    from areal_agent.tools import TOOL_SPECS

    out = []
    for _ in range(n):
        extra = {"type": "function", "function": {"name": rng.choice(["mul", "lookup", "search"]),
                                                  "description": _words(rng, 4),
                                                  "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
        tools = rng.choice([[ADD_TOOL], [ADD_TOOL], [ADD_TOOL, extra], [TOOL_SPECS["calculator"]],
                            [TOOL_SPECS["calculator"], TOOL_SPECS["python"]], [ADD_TOOL, TOOL_SPECS["calculator"]]])
        messages = ([{"role": "system", "content": _words(rng, rng.randint(2, 12))}] if rng.random() < 0.7 else [])
        messages.append({"role": "user", "content": _words(rng, rng.randint(1, 10))})
        if rng.random() < 0.5:
            out.append((chat.render(messages, tools, True), TOOL_CALL))
        else:
            messages += [{"role": "assistant", "content": "", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
                {"role": "tool", "tool_call_id": "c", "content": rng.choice(["5", "five", "5.0", '{"result": 5}'])}]
            out.append((chat.render(messages, tools, True), FINAL))
    return out


def train_tool_model(path: Path, steps: int = 300, seed: int = 0) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only spin in barriers on a busy machine
    try:
        return _train(path, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train(path: Path, steps: int, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from areal_agent.chat import ChatModel
    from areal_core.testing.tiny import make_tiny_model

    make_tiny_model(path, size="0.2m", seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    chat = ChatModel(tok, "hermes")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    data = [(chat.encode(p), chat.encode(t) + [tok.eos_token_id]) for p, t in _conversations(chat, rng, 256)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        # the answer depends on the last turn: mostly prompt suffixes (short, so cheap), every third
        # step a few whole prompts (so the long context does not distract it)
        batch = (rng.sample(data, 6) if step % 3 == 0 else
                 [(p[-rng.randint(12, 96):], t) for p, t in rng.sample(data, 16)])
        width = max(len(p) + len(t) for p, t in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, (p, t) in enumerate(batch):
            ids[i, :len(p) + len(t)] = torch.tensor(p + t)
            labels[i, len(p):len(p) + len(t)] = torch.tensor(t)
        loss = model(input_ids=ids, attention_mask=(labels != -100) | (ids != tok.pad_token_id), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tool_model(request, tmp_path_factory) -> str:
    """The trained model directory, cached in pytest's cache between runs (delete it to rebuild)."""
    import shutil

    cache = Path(request.config.cache.mkdir("areal-agent-tool-model-v2"))
    if not (cache / "trained").exists():
        shutil.copytree(train_tool_model(tmp_path_factory.mktemp("tool_model")), cache, dirs_exist_ok=True)
        (cache / "trained").write_text("ok\n")  # written last: a partial copy is rebuilt
    return str(cache)


@pytest.fixture(scope="session")
def engine(tool_model, tmp_path_factory):
    """A RolloutClient in front of one embedded server serving ``tool_model``."""
    from areal_core.rollout.client import RolloutClient
    from areal_core.testing.inference_backend import serving
    from areal_embedded.backend import EmbeddedBackend, EmbeddedConfig

    backend = EmbeddedBackend(EmbeddedConfig(name="embedded", threads=1, max_batch=8, seed=0))
    with serving(backend, tool_model, tmp_path_factory.mktemp("log") / "server.log") as addr:
        yield RolloutClient(backend, [addr], connect_timeout_s=60.0)  # a loaded machine stalls the loop for seconds


@pytest.fixture(scope="session")
def tokenizer(tool_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tool_model)
