"""A CLEVR-count-style visual task generated offline: count the coloured shapes in a picture.

``python examples/vision/shapes.py OUT [--model]`` writes ``OUT/train.jsonl`` and
``OUT/valid.jsonl`` (and, with ``--model``, the tiny Qwen2.5-VL of areal_core.testing.tiny at
``OUT/model``). Each row::

    {"id": "t17", "prompt": "How many shapes are in the picture? Reply with just the number.",
     "images": ["<base64 PNG>"], "answer": "3"}

A picture is 84×84 white pixels with 1..``max_count`` non-overlapping squares, discs and
triangles of random colours and sizes; the answer is their number, which the ``math_answer``
reward (contrib/areal-math) checks against the last number of the reply.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from areal_core.plugin import encode_image

PROMPT = "How many shapes are in the picture? Reply with just the number."
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 180, 30), (150, 60, 200), (30, 170, 190)]
SIZE = 84


def picture(count: int, rng: random.Random) -> Image.Image:
    """``count`` shapes of 14..22 pixels, placed on a grid of 4×4 cells so none overlap."""
    image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cell = SIZE // 4
    for slot in rng.sample(range(16), count):
        side = rng.randint(14, cell)
        x = (slot % 4) * cell + rng.randint(0, cell - side)
        y = (slot // 4) * cell + rng.randint(0, cell - side)
        colour = rng.choice(COLOURS)
        kind = rng.choice(("square", "disc", "triangle"))
        if kind == "square":
            draw.rectangle((x, y, x + side - 1, y + side - 1), fill=colour)
        elif kind == "disc":
            draw.ellipse((x, y, x + side - 1, y + side - 1), fill=colour)
        else:
            draw.polygon([(x + side // 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)], fill=colour)
    return image


def rows(n: int, seed: int, prefix: str, max_count: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        count = rng.randint(1, max_count)
        out.append({"id": f"{prefix}{i}", "prompt": PROMPT, "images": [encode_image(picture(count, rng))],
                    "answer": str(count)})
    return out


def write(path: Path, data: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=256, help="training pictures")
    parser.add_argument("--valid", type=int, default=64, help="held-out pictures")
    parser.add_argument("--max-count", type=int, default=4, help="at most this many shapes per picture")
    parser.add_argument("--model", action="store_true", help="also write the tiny Qwen2.5-VL to OUT/model")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.jsonl", rows(args.train, 0, "t", args.max_count))
    write(args.out / "valid.jsonl", rows(args.valid, 1, "v", args.max_count))
    if args.model:
        from areal_core.testing.tiny import make_tiny_model

        make_tiny_model(args.out / "model", size="3m", arch="qwen2_5_vl")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
