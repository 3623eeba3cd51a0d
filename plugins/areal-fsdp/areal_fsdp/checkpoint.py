"""Writing directories atomically, RNG state, and Hugging Face export on rank 0.

Atomic directories: everything is written to ``<path>.tmp``, fsync'd, and renamed into place
only when complete, so a process killed mid-write leaves either the previous directory or none,
never a half-written one (a stale ``.tmp`` is removed by the next write). :func:`write_atomically`
also checks the free space first and, when the write fails, removes the ``.tmp`` and reports a
full disk as such (path and size needed).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from areal_core.plugin import Device, disk_full_error, fsync_tree, require_free_space
from areal_fsdp.config import FSDPEngineConfig


def temp_dir_for(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def prepare_temp_dir(path: str | Path) -> Path:
    """Create an empty ``<path>.tmp`` (removing a stale one). Call on one rank only."""
    tmp = temp_dir_for(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(path: str | Path) -> None:
    """Move the finished ``<path>.tmp`` to ``path``, replacing what was there. One rank only."""
    path, tmp = Path(path), temp_dir_for(path)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def write_atomically(path: str | Path, needed: int, what: str, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into ``<path>.tmp``, then publish it as ``path``; all-or-nothing. One rank only.

    Fails before writing when the file system lacks ``needed`` bytes; on any failure the ``.tmp``
    is removed and the previous ``path`` (if any) stays."""
    path = Path(path)
    require_free_space(path, needed, what)
    tmp = prepare_temp_dir(path)
    try:
        write(tmp)
        fsync_tree(tmp)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(exc, tmp, needed, what)
        if full is not None:
            raise full from None
        raise
    publish(path)


def rng_state(device: Device) -> dict:
    """torch's CPU generator, Python's, and the device's own (``Device.rng_state``)."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "device": device.rng_state()}


def set_rng_state(device: Device, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    device.set_rng_state(state.get("device"))


def _skeleton(hf_config, critic: bool) -> torch.nn.Module:
    """The model class of ``hf_config`` with parameters on the meta device (no memory)."""
    from areal_fsdp.model import auto_class

    with torch.device("meta"):
        return auto_class(hf_config, critic).from_config(hf_config)


def materialise(hf_config, state_dict: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                cfg: FSDPEngineConfig) -> torch.nn.Module:
    """An unsharded CPU model holding ``state_dict`` (the engine's full state dict) and
    ``buffers`` (the engine's buffers, e.g. rotary frequencies, which state dicts may omit).

    With LoRA the state dict has peft names; the adapters are merged into the base weights
    unless ``cfg.lora.export == "adapter"`` (then the peft model is returned unmerged).
    """
    model: Any = _skeleton(hf_config, cfg.critic)  # a transformers model, then maybe its peft wrapper
    if cfg.lora.enabled:
        from peft import get_peft_model

        from areal_fsdp.model import peft_lora_config

        model = get_peft_model(model, peft_lora_config(cfg.lora))
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    if unexpected:
        raise RuntimeError(f"export: unexpected weights {unexpected[:5]}")
    model.tie_weights()
    for name, tensor in buffers.items():
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = tensor
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise RuntimeError(f"export: weights missing from the engine's state dict: {still_meta[:5]}")
    if cfg.lora.enabled and cfg.lora.export == "merged":
        model = model.merge_and_unload()
    return model


def write_hf_dir(model: Any, out: Path, source_dir: str) -> None:
    """``save_pretrained`` (safetensors) plus the tokenizer, generation config and (vision-language
    models) image processor of ``source_dir``."""
    from transformers import AutoTokenizer

    model.save_pretrained(out, safe_serialization=True)
    try:
        AutoTokenizer.from_pretrained(source_dir).save_pretrained(out)
    except (OSError, ValueError):
        pass  # a model directory without a tokenizer (e.g. a bare critic) exports weights only
    for name in ("generation_config.json", "preprocessor_config.json"):
        source = Path(source_dir, name)
        if source.is_file() and not (out / name).exists():
            shutil.copy(source, out / name)
