"""The ``fsdp`` train engine: an HF model sharded with FSDP2, trained on packed micro-batches.

SPMD: every rank calls every method with the same global batch. Each call plans the batch with
:func:`areal_core.data.microbatch.plan_micro_batches` (sequences balanced over ranks by tokens,
then packed into micro-batches of at most ``max_tokens_per_mb`` tokens); a micro-batch is one
row of packed sequences with ``position_ids`` restarting at every sequence and no attention
mask, which transformers turns into a per-document causal mask (flash-attn: cu_seqlens).

Loss normalisation in :meth:`FSDPEngine.train_batch`: with micro-batches m on all ranks,
``W = Σ_m loss_weight_fn(m)`` (all-reduced), the objective is ``Σ_m loss_fn(m) / W``. FSDP
averages gradients over the R ranks, so each rank back-propagates ``R · loss_fn(m) / W``.

The engine reads the run's :class:`~areal_core.plugin.RunContext` (the factory's ``run``):
``model_path`` (used when ``config.path`` is unset), ``seed`` (when ``config.seed`` is unset),
``total_steps`` (the run's optimizer steps: the LR schedule's length when ``optimizer.total_steps`` is unset). It never sets the
weight version (the trainer owns it). Rank and world size come from ``torch.distributed``; the device, its
collective backend and RNG from the :class:`~areal_core.plugin.Device` that ``config.device``
names (``auto``: the run's), so an accelerator plugin needs no change here. Built without a run (standalone use), it makes one from its config.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from areal_core.plugin import (
    ArealError,
    CheckpointLayout,
    DistInfo,
    LossFn,
    LossWeightFn,
    RunContext,
    SequenceBatch,
    all_reduce_sum,
    concat_inputs,
    engine_device,
    join_process_group,
    leave_process_group,
    plan_micro_batches,
    resolve_model_path,
    rope_positions,
    uses_rope_index,
)
from areal_fsdp import attention, checkpoint, prefix
from areal_fsdp import model as model_lib
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.logprobs import packed_logprobs_entropy, tree_logprobs_entropy
from areal_fsdp.schedule import build_scheduler, optimizer_step

DCP_SUBDIR = "dcp"
ENGINE_STATE_FILE = "engine_state.pt"
EXPORT_EXTRA_BYTES = 1 << 20  # config, tokenizer and generation config beside the weights (an estimate)


def create_engine(config: FSDPEngineConfig, run: RunContext | None = None) -> FSDPEngine:
    """Registry factory: ``factory(config, run)``."""
    return FSDPEngine(config, run)


class FSDPEngine:
    """Implements :class:`areal_core.plugin.TrainEngine` on PyTorch FSDP2."""

    def __init__(self, config: FSDPEngineConfig, run: RunContext | None = None):
        self.config = config
        self.run = run if run is not None else RunContext(model_path=config.path or "", seed=config.seed or 1,
                                                          total_steps=config.optimizer.total_steps or 0,
                                                          run_dir=Path("."))
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.dist: DistInfo | None = None
        self.hf_config: Any = None  # the transformers PretrainedConfig
        self.layout: CheckpointLayout | None = None  # in-memory <-> saved weight names
        self.model_path = ""
        self._attn = "sdpa"
        self._mrope = False
        self._share_prefixes = False

    # ------------------------------------------------------------------ setup
    def initialize(self) -> None:
        cfg = self.config
        if not (cfg.path or self.run.model_path):
            raise ArealError(f"train engine {cfg.name!r}: no model path (set `path` or the run's model_path)")
        self.model_path = resolve_model_path(cfg.path or self.run.model_path, f"train engine {cfg.name!r} path")
        total_steps = cfg.optimizer.total_steps or self.run.total_steps
        if cfg.optimizer.lr_scheduler != "constant" and not total_steps:
            raise ArealError(f"train engine {cfg.name!r}: optimizer.lr_scheduler={cfg.optimizer.lr_scheduler!r} "
                             f"needs optimizer.total_steps (or a run context with total_steps)")
        model_lib.check_model_dir(cfg, self.model_path)
        self.dist = join_process_group(engine_device(cfg.device, self.run, cfg.name))
        try:
            self._build(total_steps)
        except BaseException:
            self.destroy()  # leave no process group behind
            raise

    def _build(self, total_steps: int | None) -> None:
        """Load, wrap (LoRA, checkpointing), shard; then AdamW and the LR schedule."""
        cfg = self.config
        seed = int(cfg.seed if cfg.seed is not None else self.run.seed)
        torch.manual_seed(seed)  # same on every rank: newly initialised heads must agree before sharding
        random.seed(seed)

        self._attn = model_lib.attention_implementation(cfg, self.dist.device)
        model = model_lib.load_hf_model(cfg, self.model_path, self._attn)
        if model_lib.is_vision_language(model.config) and self.dist.world_size > 1:
            # a rank whose micro-batch has no pixels would skip the vision tower's all-gathers
            raise ArealError(f"train engine {cfg.name!r}: vision-language models train on one rank for now "
                             f"(world size {self.dist.world_size}); see docs/models.md")
        self.hf_config = model.config
        self._mrope = uses_rope_index(model)  # multi-axis rotary positions (Qwen2-VL family)
        self._share_prefixes = cfg.prefix_sharing and self._attn == attention.NAME and not self._mrope
        self.layout = CheckpointLayout(model)  # before LoRA and sharding: the HF model's own names
        if cfg.lora.enabled:
            model = model_lib.add_lora(model, cfg.lora)
        if cfg.gradient_checkpointing:
            model_lib.enable_activation_checkpointing(model)
        model.to(self.dist.device)
        mesh = init_device_mesh(self.dist.device.type, (self.dist.world_size,))
        self.model = model_lib.shard(model, mesh, cfg.mixed_precision)

        opt = cfg.optimizer
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                           weight_decay=opt.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, opt, total_steps)
        if cfg.check_packing:
            self._check_packing_isolation()

    def destroy(self) -> None:
        if self.dist is None:
            return
        self.model = self.optimizer = self.scheduler = None
        leave_process_group()
        self.dist.accelerator.empty_cache()
        self.dist = None

    # --------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        """[T] logprobs of ``input_ids[t]`` given its prefix (0 at sequence starts); critic: values [T]."""
        self._require_initialized()
        self.model.eval()
        out = torch.zeros(batch.num_tokens, dtype=torch.float32, device=self.dist.device)
        for indices in self._my_micro_batches(batch):
            if not indices:
                self._dummy_pass(backward=False)
                continue
            mb = batch.select(indices).to(self.dist.device)
            values, _ = self._per_token(mb, temperature)
            out[_token_positions(batch, indices).to(self.dist.device)] = values
        self._reshard()
        if self.dist.world_size > 1:
            dist.all_reduce(out)  # ranks hold disjoint tokens
        return out.to(batch.cu_seqlens.device)

    # ----------------------------------------------------------------- train
    def train_batch(self, batch: SequenceBatch, loss_fn: LossFn, loss_weight_fn: LossWeightFn) -> dict[str, float]:
        """One optimizer step on ``batch``; returns loss, grad_norm, lr and loss_fn's stats."""
        self._require_initialized()
        cfg, world = self.config, self.dist.world_size
        self.model.train()
        micro_batches = [batch.select(ix).to(self.dist.device) if ix else None for ix in self._my_micro_batches(batch)]
        weights = [float(loss_weight_fn(mb)) if mb is not None else 0.0 for mb in micro_batches]
        total_weight, = all_reduce_sum([sum(weights)], self.dist.device)
        scale = world / total_weight if total_weight > 0 else 0.0

        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        stat_sums: dict[str, float] = defaultdict(float)
        stat_weights: dict[str, float] = defaultdict(float)
        for mb, weight in zip(micro_batches, weights):
            if mb is None:
                self._dummy_pass(backward=True)
                continue
            values, entropy = self._per_token(mb, cfg.temperature)
            loss, stats = loss_fn(values, entropy, mb)
            (loss * scale).backward()
            loss_sum += float(loss.detach())
            for key, value in (stats or {}).items():
                stat_sums[key] += weight * float(value)
                stat_weights[key] += weight

        grad_norm = self._clip_gradients()
        assert self.optimizer is not None and self.scheduler is not None  # _require_initialized
        lr, update = optimizer_step(self.optimizer, self.scheduler, grad_norm, total_weight)

        loss_total, = all_reduce_sum([loss_sum], self.dist.device)
        result = {
            "loss": loss_total / total_weight if total_weight > 0 else 0.0,
            "grad_norm": grad_norm,
            "lr": lr,
            "update_skipped": 0.0 if update else 1.0,
            "loss_weight": total_weight,
            "n_tokens": float(batch.num_tokens),
            "n_seqs": float(batch.num_seqs),
            "n_micro_batches": float(len(micro_batches)),
        }
        result.update(self._reduce_stats(stat_sums, stat_weights))
        return result

    # ------------------------------------------------------- checkpointing
    def save(self, path: str) -> None:
        """Recovery checkpoint: DCP model+optimizer shards, LR scheduler, per-rank RNG."""
        self._require_initialized()
        assert self.model is not None and self.optimizer is not None  # _require_initialized
        rank = self.dist.rank
        if rank == 0:
            checkpoint.prepare_temp_dir(path)
        dist.barrier()
        tmp = checkpoint.temp_dir_for(path)
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / DCP_SUBDIR))
        torch.save(checkpoint.rng_state(self.dist.accelerator), tmp / f"rng_rank{rank}.pt")
        if rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict(),
                        "world_size": self.dist.world_size}, tmp / ENGINE_STATE_FILE)
        dist.barrier()
        if rank == 0:
            checkpoint.publish(path)
        dist.barrier()

    def load(self, path: str) -> None:
        """Restore what :meth:`save` wrote (the world size may differ; RNG then restores by rank)."""
        self._require_initialized()
        root = Path(path)
        if not (root / ENGINE_STATE_FILE).is_file():
            raise ArealError(f"train engine {self.config.name!r}: {path!r} is not a checkpoint written by save() "
                             f"(no {ENGINE_STATE_FILE})")
        assert self.model is not None and self.optimizer is not None  # _require_initialized
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(root / DCP_SUBDIR))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        meta = torch.load(root / ENGINE_STATE_FILE, weights_only=False)
        self.scheduler.load_state_dict(meta["scheduler"])
        rng_file = root / f"rng_rank{self.dist.rank}.pt"
        if rng_file.is_file():
            checkpoint.set_rng_state(self.dist.accelerator, torch.load(rng_file, weights_only=False))

    def export_hf(self, path: str) -> None:
        """Write an HF directory (safetensors, config, tokenizer); LoRA: merged or adapter per config."""
        self._require_initialized()
        full = self._full_state_dict()
        if self.dist.rank == 0:
            model = checkpoint.materialise(self.hf_config, full, self._cpu_buffers(), self.config)
            needed = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + EXPORT_EXTRA_BYTES
            checkpoint.write_atomically(path, needed, f"weight export {Path(path).name}",
                                        lambda tmp: checkpoint.write_hf_dir(model, tmp, self.model_path))
        dist.barrier()

    def export_adapter(self, path: str) -> None:
        """Write the LoRA adapter alone, in PEFT format (``adapter_config.json`` +
        ``adapter_model.safetensors``): what ``weight_sync.type=adapter`` sends to the servers.
        Collective on every rank; rank 0 writes."""
        self._require_initialized()
        if not self.config.lora.enabled:
            raise ArealError(f"train engine {self.config.name!r}: export_adapter needs actor.lora.enabled=true "
                             "(there is no adapter to export)")
        full = self._full_state_dict()
        if self.dist.rank == 0:
            tmp = checkpoint.prepare_temp_dir(path)
            unmerged = self.config.model_copy(update={"lora": self.config.lora.model_copy(update={"export": "adapter"})})
            model: Any = checkpoint.materialise(self.hf_config, full, self._cpu_buffers(), unmerged)  # a PeftModel
            model.save_pretrained(tmp)
            checkpoint.publish(path)
        dist.barrier()

    def named_full_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full weights under the names of the saved files (what ``export_hf`` writes: fused MoE
        experts come out per expert, see :class:`~areal_core.plugin.CheckpointLayout`), a few
        tensors at a time. Collective: iterate it on every rank; only rank 0 receives items.
        LoRA: the merged weights."""
        self._require_initialized()
        assert self.layout is not None  # _require_initialized
        if self.config.lora.enabled:
            full = self._full_state_dict()
            if self.dist.rank == 0:
                merged = checkpoint.materialise(self.hf_config, full, self._cpu_buffers(), self.config)
                yield from self.layout.to_checkpoint(merged.named_parameters())
            return
        for name, param in self.model.named_parameters():
            tensor = param.full_tensor() if isinstance(param, DTensor) else param
            if self.dist.rank == 0:
                yield from self.layout.to_checkpoint([(name, tensor.detach())])

    # ------------------------------------------------------------- helpers
    def _require_initialized(self) -> None:
        if self.model is None:
            raise ArealError(f"train engine {self.config.name!r}: call initialize() first")

    def _my_micro_batches(self, batch: SequenceBatch) -> tuple[tuple[int, ...], ...]:
        """This rank's micro-batches (sequence indices, ascending). With prefix sharing the
        planned units are the groups that share a prefix, sized by their tree-row tokens."""
        if self._share_prefixes and not batch.multimodal:
            units, sizes = prefix.sharing_units(batch, self.config.max_tokens_per_mb)
        else:
            units, sizes = [[i] for i in range(batch.num_seqs)], batch.seqlens.tolist()
        plan = plan_micro_batches(sizes, self.config.max_tokens_per_mb, self.dist.world_size)
        return tuple(tuple(sorted(i for u in mb for i in units[u])) for mb in plan.ranks[self.dist.rank])

    def _logits(self, mb: SequenceBatch) -> torch.Tensor:
        """[t, V] (critic: [t, 1]) for one packed micro-batch on the engine's device.

        With images (``mb.multimodal``) the sequences' inputs go in concatenated, in sequence
        order; a model with multi-axis rotary positions gets ``position_ids [4, 1, t]``: the
        per-sequence text positions (where documents restart) then each sequence's ``[3, L]``
        positions from the model's ``get_rope_index``."""
        assert self.model is not None  # _require_initialized
        kwargs: dict[str, Any] = {}
        if model_lib.takes_cu_seqlens(self._attn):
            cu = mb.cu_seqlens.to(torch.int32)
            longest = int(mb.seqlens.max())
            kwargs = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        ids, positions = mb["input_ids"], mb.position_ids[None]
        kwargs.update(concat_inputs(mb.multimodal))
        if self._mrope:  # text rows too: the text positions tell the model where documents restart
            bounds = mb.cu_seqlens.tolist()
            media = mb.multimodal or [{}] * mb.num_seqs
            rope = [rope_positions(self.model, ids[bounds[i]:bounds[i + 1]].cpu(), inputs)[0]
                    for i, inputs in enumerate(media)]
            positions = torch.cat([positions, torch.cat(rope, 1).to(ids.device)])[:, None]  # [4, 1, t]
        out = self.model(input_ids=ids[None], position_ids=positions, use_cache=False, **kwargs)
        return out.logits[0]

    def _tree_logits(self, tree: prefix.SharedPrefixRow) -> torch.Tensor:
        """[t', V] (critic: [t', 1]) for the rows of a shared-prefix layout on the engine's device."""
        assert self.model is not None  # _require_initialized
        out = self.model(input_ids=tree.input_ids[None], position_ids=tree.position_ids[None], use_cache=False,
                         cu_seq_lens_q=tree.cu_seqlens, **{attention.CONTEXT_KWARG: tree.contexts})
        return out.logits[0]

    def _per_token(self, mb: SequenceBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logprobs [t], entropy [t]) for an actor; (values [t], None) for a critic."""
        tree = prefix.tree_row(mb) if self._share_prefixes and not mb.multimodal else None
        if tree is not None:
            tree = tree.to(self.dist.device)
            logits = self._tree_logits(tree)
            if self.config.critic:
                return logits[:, 0].float()[tree.gather], None
            lp, ent = tree_logprobs_entropy(logits, tree.input_ids, tree.parents, temperature,
                                            self.config.logprob_chunk_tokens)
            return lp[tree.gather], ent[tree.gather]
        logits = self._logits(mb)
        if self.config.critic:
            return logits[:, 0].float(), None
        starts = mb.position_ids == 0
        return packed_logprobs_entropy(logits, mb["input_ids"], starts, temperature, self.config.logprob_chunk_tokens)

    @torch.no_grad()
    def _check_packing_isolation(self) -> None:
        """Fail fast when packed sequences can see each other: two short sequences packed into
        one row must give the outputs each gives alone (a model whose attention ignores the
        position-id reset, or a cache left on, fails here instead of silently training wrong)."""
        vocab = self.model.get_input_embeddings().num_embeddings  # type: ignore[operator]  # a transformers model
        ids = torch.randint(0, min(vocab, 1000), (10,), generator=torch.Generator().manual_seed(0))
        batch = SequenceBatch(torch.tensor([0, 6, 10]), {"input_ids": ids}).to(self.dist.device)
        self.model.eval()
        packed, _ = self._per_token(batch, 1.0)
        alone = torch.cat([self._per_token(batch.select([i]).to(self.dist.device), 1.0)[0] for i in (0, 1)])
        self._reshard()
        gap = float((packed - alone).abs().max())
        tolerance = 1e-4 if self.config.dtype == "float32" and not self.config.mixed_precision else 5e-2
        if gap > tolerance:
            raise ArealError(f"train engine {self.config.name!r}: packed sequences attend to each other with "
                             f"{self._attn!r} attention on {self.model_path!r} (outputs differ by {gap:.3g} from "
                             f"unpacked); try attn_implementation: sdpa or eager, or a newer transformers")

    def _reshard(self) -> None:
        """Free the unsharded parameters FSDP keeps after a no-grad forward (the root keeps its
        own for a backward that will not come), so parameters() are the sharded masters again."""
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def _dummy_pass(self, backward: bool) -> None:
        """A one-token pass with zero gradient: keeps FSDP's collectives in step on a rank with
        fewer micro-batches than the others."""
        assert self.model is not None  # _require_initialized
        ids = torch.zeros(1, 1, dtype=torch.long, device=self.dist.device)
        out = self.model(input_ids=ids, position_ids=ids, use_cache=False).logits
        if backward:
            (out.float().sum() * 0.0).backward()

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.config.optimizer.gradient_clipping or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return float(norm)

    def _reduce_stats(self, sums: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
        """loss_fn stats averaged over all micro-batches of all ranks, weighted by loss weight."""
        if self.dist.world_size > 1:
            gathered: list = [None] * self.dist.world_size
            dist.all_gather_object(gathered, (dict(sums), dict(weights)))
            sums, weights = defaultdict(float), defaultdict(float)
            for s, w in gathered:
                for k in s:
                    sums[k] += s[k]
                    weights[k] += w[k]
        return {k: sums[k] / weights[k] if weights[k] > 0 else 0.0 for k in sorted(sums)}

    def _cpu_buffers(self) -> dict[str, torch.Tensor]:
        """The model's buffers (FSDP leaves them unsharded), copied to CPU."""
        return {name: b.detach().cpu() for name, b in self.model.named_buffers()}

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """Unsharded CPU state dict on rank 0 ({} elsewhere), never aliasing the live weights
        (with one CPU rank the state dict holds the parameters themselves). Collective."""
        assert self.model is not None  # _require_initialized
        # a full, CPU-offloaded state dict holds plain tensors
        full = cast(dict[str, torch.Tensor],
                    get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
        live = {_storage_ptr(p) for p in self.model.parameters()}
        return {k: v.clone() if _storage_ptr(v) in live else v for k, v in full.items()}


def _storage_ptr(t: torch.Tensor) -> int:
    local = t.to_local() if isinstance(t, DTensor) else t
    return local.untyped_storage().data_ptr()


def _token_positions(batch: SequenceBatch, indices: tuple[int, ...]) -> torch.Tensor:
    """Positions in the packed ``batch`` of the tokens of sequences ``indices`` (in that order)."""
    cu = batch.cu_seqlens.tolist()
    return torch.cat([torch.arange(cu[i], cu[i + 1]) for i in indices])
