"""Allocation strings: how many processes of which backend, with which parallel layout.

    scheduler:
      name: ray
      allocation: vllm:d2t2+fsdp:d4          # 2 servers × 2 GPUs (TP 2), 4 FSDP ranks

Grammar (whitespace ignored, letters case-insensitive)::

    allocation := component ("+" component)*
    component  := [role "="] backend ":" dims
    dims       := (("d" | "t" | "p" | "c" | "e") int)+      each letter at most once, int ≥ 1

``d`` data, ``t`` tensor, ``p`` pipeline, ``c`` context, ``e`` expert parallel (missing: 1).
``role`` is the run-config section the component is for (``inference`` or ``actor``); without
one, a component takes the section whose configured ``name`` is its backend.

Derived layout, per component:

* inference (``inference: {name: BACKEND}``): ``d`` servers, each on ``t·p`` devices;
  ``world_size = d·t·p``;
* train (``actor: {name: BACKEND}``): ``world_size = d·t·p·c`` ranks, one device each; ``e``
  expert-parallel groups are carved out of the ``d·c`` data ranks (``e`` divides ``d·c``) and
  need a model with experts.

``inference.n_servers`` and ``scheduler.trainer_ranks`` are the shorthand
``INFERENCE:d{n_servers}+ACTOR:d{trainer_ranks}`` (``inference.tensor_parallel_size``,
``pipeline_parallel_size`` and ``expert_parallel_size`` add the servers' t, p and e);
:func:`apply_allocation` is the one place that reconciles them with ``scheduler.allocation`` and
writes the derived values back, so backends read their servers' layout from their config and
train engines theirs from ``RunContext.parallel`` (:func:`layout_of`). A component that cannot
run a dim > 1 of its part is refused by :func:`require_parallel_support`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from areal_core.api.types import ParallelLayout
from areal_core.errors import ArealError

DIMS = "dtpce"
ROLES = ("inference", "actor")
_NAME = r"[a-z][a-z0-9_.-]*"
_COMPONENT = re.compile(rf"^(?:(?P<role>{_NAME})=)?(?P<backend>{_NAME}):(?P<dims>[a-z0-9]+)$")
_DIM = re.compile(r"([a-z])(\d+)")
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class AllocComponent:
    """One ``[role=]backend:dims`` part; ``role`` is None until bound to a config section."""

    text: str
    backend: str
    dims: dict[str, int]
    role: str | None = None

    def __getattr__(self, name: str) -> int:
        if len(name) == 1 and name in DIMS:
            return self.dims.get(name, 1)
        raise AttributeError(name)

    @property
    def world_size(self) -> int:
        """Processes × devices: d·t·p·c (expert parallel reuses data ranks)."""
        return self.d * self.t * self.p * self.c

    @property
    def processes(self) -> int:
        """Processes a scheduler starts: d servers (inference) or every rank (train)."""
        return self.d if self.role == "inference" else self.world_size

    @property
    def devices_per_process(self) -> int:
        """Accelerators per process: t·p per server (inference), 1 per rank (train)."""
        return self.t * self.p if self.role == "inference" else 1

    def layout(self) -> ParallelLayout:
        """This part's sizes as the :class:`~areal_core.api.types.ParallelLayout` components get."""
        return ParallelLayout(self.d, self.t, self.p, self.c, self.e, part=self.spec())

    def spec(self) -> str:
        """Canonical text: ``role=backend:d..t..`` with every dim that is not 1, d always."""
        dims = "".join(f"{k}{v}" for k, v in ((k, self.dims.get(k, 1)) for k in DIMS) if k == "d" or v != 1)
        return f"{self.role + '=' if self.role else ''}{self.backend}:{dims}"


@dataclass(frozen=True)
class Allocation:
    """A parsed allocation string: its components, in order."""

    text: str
    components: tuple[AllocComponent, ...] = field(default_factory=tuple)

    def role(self, role: str) -> AllocComponent:
        for c in self.components:
            if c.role == role:
                return c
        raise ArealError(f"scheduler.allocation {self.text!r} has no {role} component (mark roles as in "
                         f"'inference=vllm:d2+actor=fsdp:d4'; `areal train` does that from the run's sections)")

    @property
    def n_servers(self) -> int:
        return self.role("inference").d

    @property
    def trainer_ranks(self) -> int:
        return self.role("actor").world_size

    def spec(self) -> str:
        return "+".join(c.spec() for c in self.components)

    def require(self, unit: str, have: float, where: str, per_process: Callable[[AllocComponent], float]) -> None:
        """ArealError if the components need more ``unit`` than ``have`` (``where``: who has it).

        Need = Σ over components of ``processes × per_process(component)``."""
        need = {c.spec(): c.processes * per_process(c) for c in self.components}
        total = sum(need.values())
        if total > have + 1e-9:
            parts = ", ".join(f"{k}: {v:g}" for k, v in need.items())
            raise ArealError(f"scheduler.allocation {self.spec()!r} needs {total:g} {unit} ({parts}) but {where} "
                             f"has {have:g}: shrink the allocation or grow the cluster")


def parse_allocation(text: str) -> Allocation:
    """Parse the syntax (no config needed); ArealError naming the part at fault."""
    source = text
    text = re.sub(r"\s+", "", str(text)).lower()
    if not text:
        raise ArealError("scheduler.allocation is empty: write e.g. 'vllm:d2+fsdp:d4'")
    components = []
    for part in text.split("+"):
        components.append(_parse_component(source, part))
    roles = [c.role or c.backend for c in components]
    dupes = sorted({r for r in roles if roles.count(r) > 1})
    if dupes:
        raise ArealError(f"scheduler.allocation {source!r}: {dupes[0]!r} appears twice; give each component its own "
                         f"role ({'/'.join(ROLES)}=BACKEND:DIMS)")
    return Allocation(source, tuple(components))


def _parse_component(source: str, part: str) -> AllocComponent:
    where = f"scheduler.allocation {source!r}: part {part!r}"
    if not part:
        raise ArealError(f"scheduler.allocation {source!r}: empty part (a '+' too many)")
    m = _COMPONENT.match(part)
    if m is None:
        if ":" not in part:
            raise ArealError(f"{where} has no backend: write BACKEND:DIMS, e.g. 'fsdp:{part}'")
        raise ArealError(f"{where} is not [ROLE=]BACKEND:DIMS (e.g. 'actor=fsdp:d4', dims from {DIMS})")
    role = m["role"]
    if role is not None and role not in ROLES:
        raise ArealError(f"{where}: unknown role {role!r} (one of {', '.join(ROLES)})")
    dims_text = m["dims"]
    pairs = _DIM.findall(dims_text)
    if "".join(f"{k}{v}" for k, v in pairs) != dims_text:
        raise ArealError(f"{where}: dims {dims_text!r} are not LETTER+NUMBER pairs from {DIMS!r} (e.g. d2t2)")
    dims: dict[str, int] = {}
    for letter, number in pairs:
        if letter not in DIMS:
            raise ArealError(f"{where}: unknown parallel dim {letter!r} (d data, t tensor, p pipeline, c context, e expert)")
        if letter in dims:
            raise ArealError(f"{where}: {letter!r} given twice")
        if int(number) < 1:
            raise ArealError(f"{where}: {letter}{number} must be at least 1")
        dims[letter] = int(number)
    return AllocComponent(part, m["backend"], dims, role)


def bind(alloc: Allocation, section_names: dict[str, str], model_path: str | Path | None = None) -> Allocation:
    """Give each component its role and check the layout against the run config.

    ``section_names``: configured backend name per role, e.g. ``{"inference": "vllm", "actor": "fsdp"}``.
    ``model_path``: an HF directory whose ``config.json`` says whether the model has experts."""
    bound = []
    for c in alloc.components:
        role = c.role or next((r for r, name in section_names.items() if name == c.backend), None)
        where = f"scheduler.allocation {alloc.text!r}: part {c.text!r}"
        if role is None:
            configured = ", ".join(f"{r}.name={n}" for r, n in section_names.items())
            raise ArealError(f"{where}: backend {c.backend!r} is none of the run's components ({configured})")
        if section_names.get(role) != c.backend:
            raise ArealError(f"{where}: role {role} is configured as {section_names.get(role)!r}, not {c.backend!r}")
        if role == "inference" and c.c != 1:
            raise ArealError(f"{where}: context parallel (c) is a training layout; servers take d, t, p, e")
        if role == "actor" and c.e > 1 and (c.d * c.c) % c.e:
            raise ArealError(f"{where}: e{c.e} must divide the data×context ranks d·c = {c.d * c.c}")
        if c.e > 1:
            _check_experts(where, c.e, model_path)
        bound.append(AllocComponent(c.text, c.backend, c.dims, role))
    roles = [c.role for c in bound]
    if len(set(roles)) != len(roles):
        raise ArealError(f"scheduler.allocation {alloc.text!r}: two components for the same role "
                         f"({', '.join(sorted({str(r) for r in roles if roles.count(r) > 1}))})")
    missing = [r for r in ROLES if r not in roles]
    if missing:
        raise ArealError(f"scheduler.allocation {alloc.text!r} has no {missing[0]} component: add "
                         f"'+{section_names[missing[0]]}:d1'")
    return Allocation(alloc.text, tuple(bound))


def _check_experts(where: str, e: int, model_path: str | Path | None) -> None:
    config = _model_config(model_path)
    experts = next((config[k] for k in EXPERT_KEYS if isinstance(config.get(k), int) and config[k] > 0), None)
    if experts is None:
        raise ArealError(f"{where}: e{e} needs a model with experts, and {model_path}/config.json has none "
                         f"({'/'.join(EXPERT_KEYS)})")
    if experts % e:
        raise ArealError(f"{where}: e{e} must divide the model's {experts} experts")


def _model_config(model_path: str | Path | None) -> dict[str, Any]:
    path = Path(model_path).expanduser() / "config.json" if model_path else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    # multimodal configs keep the language model's fields under text_config
    return {**data.get("text_config", {}), **data} if isinstance(data, dict) else {}


# inference config fields (InferenceConfigBase) that mirror the inference part's dims
INFERENCE_FIELDS = {"d": "n_servers", "t": "tensor_parallel_size", "p": "pipeline_parallel_size",
                    "e": "expert_parallel_size"}


def shorthand(inference: str, n_servers: int, actor: str, trainer_ranks: int, server_dims: str = "") -> Allocation:
    """The allocation ``n_servers``/``trainer_ranks`` (and the servers' ``t``/``p``/``e`` sizes,
    ``server_dims`` such as ``"t2"``) stand for."""
    text = f"inference={inference}:d{n_servers}{server_dims}+actor={actor}:d{trainer_ranks}"
    return Allocation(text, parse_allocation(text).components)


def layout_of(cfg: Any, role: str, world_size: int) -> ParallelLayout:
    """The layout of ``role`` (``actor``) in a resolved config's ``scheduler.allocation`` (canonical
    after :func:`apply_allocation`); pure data parallel over ``world_size`` processes when the run
    has no allocation (``areal sft`` and co.) or no such part."""
    sched = cfg.components.get("scheduler")
    text = getattr(sched, "allocation", None)
    if text:
        part = next((c for c in parse_allocation(text).components if c.role == role), None)
        if part is not None:
            return part.layout()
    return ParallelLayout(data=world_size)


def require_parallel_support(component: object, what: str, layout: ParallelLayout) -> None:
    """ArealError unless ``component`` honours every dim > 1 of ``layout`` beyond data parallel
    (:class:`~areal_core.api.protocols.SupportsParallelLayout`). ``what``: e.g. "train engine 'fsdp'"."""
    from areal_core.api.protocols import SupportsParallelLayout

    wanted = layout.model_parallel()
    supported = component.parallel_dims if isinstance(component, SupportsParallelLayout) else frozenset()
    refused = {k: v for k, v in wanted.items() if k not in supported}
    if refused:
        names = {"t": "tensor", "p": "pipeline", "c": "context", "e": "expert"}
        dims = ", ".join(f"{k}{v} ({names[k]} parallel)" for k, v in refused.items())
        can = ", ".join(sorted(supported)) or "data parallel (d) only"
        raise ArealError(f"scheduler.allocation part {layout.part!r}: {what} cannot run {dims}; it supports {can}. "
                         "drop those dims from the part or choose a component that runs them")


def apply_allocation(cfg: Any) -> Allocation:
    """Resolve a run's allocation and write the derived counts back into its config.

    ``cfg`` is a :class:`~areal_core.config.loader.ResolvedConfig`. Reads ``scheduler.allocation``
    (or the shorthands ``inference.n_servers`` / ``scheduler.trainer_ranks``), validates it
    against the configured backends and the model, then sets ``scheduler.allocation`` to the
    canonical string and ``inference.n_servers`` / ``scheduler.trainer_ranks`` to the derived
    counts (where those fields exist), so every process that loads the resolved config agrees.
    A shorthand set explicitly to a different count than the allocation is an ArealError.
    """
    sched, inference, actor = (cfg.components[k] for k in ("scheduler", "inference", "actor"))
    n_servers, ranks = int(getattr(inference, "n_servers", 1)), int(getattr(sched, "trainer_ranks", 1))
    text = getattr(sched, "allocation", None)
    if text is None:
        server_dims = "".join(f"{d}{getattr(inference, f)}" for d, f in INFERENCE_FIELDS.items()
                              if d != "d" and int(getattr(inference, f, 1)) > 1)
        alloc = bind(shorthand(inference.name, n_servers, actor.name, ranks, server_dims),
                     {"inference": inference.name, "actor": actor.name}, getattr(cfg.run, "model_path", None))
    else:
        alloc = bind(parse_allocation(text), {"inference": inference.name, "actor": actor.name},
                     getattr(cfg.run, "model_path", None))
    server = alloc.role("inference")
    derived = [("scheduler", sched, "trainer_ranks", alloc.trainer_ranks),
               *(("inference", inference, field_, getattr(server, d)) for d, field_ in INFERENCE_FIELDS.items())]
    for section, model, key, value in derived:
        explicit = getattr(model, key, value)
        if text is not None and key in model.model_fields_set and explicit != value:
            raise ArealError(f"{section}.{key}={explicit} contradicts scheduler.allocation {text!r} ({value}): "
                             f"drop {section}.{key} (the allocation is the whole layout)")
    for model, key, value in [(sched, "allocation", alloc.spec()), *((m, k, v) for _, m, k, v in derived)]:
        if key in type(model).model_fields:
            setattr(model, key, value)
    return alloc

