"""Read a PEFT LoRA adapter directory as weight deltas, for ``/load_lora_adapter``.

The embedded server serves one policy, so an adapter is merged into the served weights: for
each adapted linear layer with ``A [r, in]`` and ``B [out, r]``::

    W_served = W_base + s · (B @ A),    s = lora_alpha / r   (use_rslora: lora_alpha / sqrt(r))

as PEFT's own merge computes it (r is read from A's shape, so a per-module ``rank_pattern`` needs
nothing more). The server keeps ``W_base`` of every adapted layer (:class:`AdapterWeights`), so
the next adapter replaces this one instead of adding to it, and unloading restores the base.

Adapter features this merge does not reproduce are refused by name: DoRA, ``fan_in_fan_out``
(GPT-2 style Conv1D), ``alpha_pattern``, trained biases, ``modules_to_save``, embedding adapters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from areal_core.plugin import ArealError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
UNSUPPORTED: dict[str, tuple[Any, ...]] = {  # adapter_config field -> its neutral value(s)
    "use_dora": (False, None), "fan_in_fan_out": (False, None), "alpha_pattern": ({}, None),
    "bias": ("none", None), "modules_to_save": (None, []),
}


def read_adapter_deltas(path: str | Path) -> dict[str, torch.Tensor]:
    """``{HF parameter name: s · (B @ A)}`` (fp32) of the adapter in directory ``path``.

    Raises ArealError naming the file or field at fault (missing files, another PEFT type, an
    unsupported option, a lora_A without its lora_B or mismatched ranks)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise ArealError(f"load_lora_adapter: {path} lacks {CONFIG_FILE} or {WEIGHTS_FILE} (is it a PEFT adapter "
                         "directory, as export_adapter writes?)")
    try:
        config = json.loads(config_file.read_text())
        tensors = load_file(str(weights_file))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ArealError(f"load_lora_adapter: cannot read the adapter in {path}: {exc}") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise ArealError(f"load_lora_adapter: {config_file} has peft_type {config.get('peft_type')!r}; only LORA merges")
    for field, neutral in UNSUPPORTED.items():
        if config.get(field) not in neutral:
            raise ArealError(f"load_lora_adapter: {config_file} sets {field}={config[field]!r}, which the embedded "
                             "server cannot merge")
    alpha, rslora = float(config.get("lora_alpha", 8)), bool(config.get("use_rslora", False))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        module, sep, part = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        if not sep or part not in ("A.weight", "B.weight"):
            raise ArealError(f"load_lora_adapter: {weights_file} holds {key!r}, not a lora_A/lora_B weight "
                             "(embedding adapters and extra modules are not supported)")
        pairs.setdefault(module, {})[part[0]] = tensor
    deltas = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ArealError(f"load_lora_adapter: {weights_file} has lora_{''.join(ab)} of {module!r} without its pair")
        a, b = ab["A"].float(), ab["B"].float()
        rank = a.shape[0]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != rank:
            raise ArealError(f"load_lora_adapter: {module!r} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, "
                             "which do not multiply (B [out, r] @ A [r, in])")
        scaling = alpha / (math.sqrt(rank) if rslora else rank)
        deltas[f"{module}.weight"] = (b @ a) * scaling
    if not deltas:
        raise ArealError(f"load_lora_adapter: {weights_file} holds no LoRA weights")
    return deltas


class AdapterWeights:
    """The base weights under the adapter the server serves: what merging starts from.

    ``merge`` and ``restore`` run in the model thread, with generation stopped (an exclusive
    scheduler command). A full update (disk or distributed) restores the base first, then
    overwrites it: the new weights are the base, served without an adapter.
    """

    def __init__(self) -> None:
        self.base: dict[str, torch.Tensor] = {}  # name -> W_base of each layer the adapter changed

    @property
    def active(self) -> bool:
        return bool(self.base)

    @torch.no_grad()
    def merge(self, live: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor]) -> int:
        """Serve ``W_base + delta`` for every named delta and plain ``W_base`` for layers the
        previous adapter changed and this one does not. ``live``: the model's tensors by name
        (already checked to hold every delta's name and shape). Returns the layers changed."""
        self.restore(live, keep=set(deltas))
        for name, delta in deltas.items():
            target = live[name]
            base = self.base.setdefault(name, target.detach().clone())
            target.copy_((base.float() + delta.to(base.device)).to(target.dtype))
        return len(deltas)

    @torch.no_grad()
    def restore(self, live: dict[str, torch.Tensor], keep: Collection[str] = ()) -> None:
        """Put the base weights back in every adapted layer not in ``keep``."""
        for name in [n for n in self.base if n not in keep]:
            live[name].copy_(self.base.pop(name))
