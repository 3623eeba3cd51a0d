"""The ``megatron`` train engine: an HF decoder converted to a megatron-core GPTModel, trained with
tensor (t), pipeline (p), data (d = world / (t·p)) and, for mixture-of-experts models, expert
(e, carved out of d) parallelism through megatron's forward-backward schedules (1F1B when p > 1).

SPMD: every rank calls every method with the same global batch. The batch is planned with
:func:`~areal_core.plugin.plan_micro_batches` over the d data-parallel replicas (sequences
balanced by tokens, then micro-batches of at most ``max_tokens_per_mb`` tokens); the ranks of one
replica (its t·p tensor/pipeline ranks) run the same micro-batches. A micro-batch is a [b, s]
block of its sequences, one per row right-padded to the longest, or (``pack_sequences``) several
per row under a block-diagonal causal mask (see :mod:`areal_megatron.rows`); pad outputs are dropped.
With e > 1 the ranks of an expert-parallel group exchange tokens in every MoE layer (megatron's
``allgather`` dispatcher needs the same [b, s] on each), so all ranks run the same number of
micro-batches of one shape (empty ones where a replica has fewer); dropless routing keeps pad
tokens from changing any real token's experts.

Loss normalisation, as in the fsdp engine: with ``W = Σ_m loss_weight_fn(m)`` over all
micro-batches of all replicas, the objective is ``Σ_m loss_fn(m) / W``. Each replica
back-propagates ``loss_fn(m) / W`` and gradients are summed over replicas (all-reduce over the
data-parallel group; a routed expert's over its expert-data-parallel group, since its tokens
already came from every rank of its expert-parallel group), then over the embedding group for
tied embeddings split across stages.
The gradient norm is the global L2 norm (tensor-parallel shards summed, replicated parameters
counted once); clipping and AdamW run on each rank's local shards.

Logprobs: the last stage's vocab-parallel logits are all-gathered over the tensor-parallel group
(its backward hands each rank its slice of the gradient), then turned into per-token logprobs and
entropy by :func:`areal_fsdp.logprobs.packed_logprobs_entropy`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from areal_core.plugin import (
    ArealError,
    DistInfo,
    LossFn,
    LossWeightFn,
    RunContext,
    SequenceBatch,
    all_reduce_sum,
    engine_device,
    join_process_group,
    leave_process_group,
    plan_micro_batches,
)
from areal_fsdp import checkpoint as files
from areal_fsdp.logprobs import packed_logprobs_entropy
from areal_fsdp.schedule import build_scheduler, optimizer_step
from areal_megatron import checkpoint, sharding, streaming
from areal_megatron import model as model_lib
from areal_megatron import rows as rows_lib
from areal_megatron.config import MegatronEngineConfig
from areal_megatron.convert import Layout, to_hf


def create_engine(config: MegatronEngineConfig, run: RunContext | None = None) -> MegatronEngine:
    """Registry factory: ``factory(config, run)``."""
    return MegatronEngine(config, run)


class MegatronEngine:
    """Implements :class:`areal_core.plugin.TrainEngine` on megatron-core, and
    :class:`areal_core.plugin.SupportsParallelLayout` for the allocation's t, p and e."""

    parallel_dims = frozenset("tpe")

    def __init__(self, config: MegatronEngineConfig, run: RunContext | None = None):
        self.config = config
        self.run = run if run is not None else RunContext(model_path=config.path or "", seed=config.seed or 1,
                                                          total_steps=config.optimizer.total_steps or 0,
                                                          run_dir=Path("."))
        self.model: Any = None  # megatron GPTModel of this pipeline stage
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.dist: DistInfo | None = None
        self.hf_config: Any = None
        self.layout: Layout = None  # type: ignore[assignment]  # set by initialize()
        self.model_path = ""
        self._joined_model_parallel = False

    # ------------------------------------------------------------------ setup
    def initialize(self) -> None:
        from transformers import AutoConfig

        cfg = self.config
        self.model_path = cfg.path or self.run.model_path
        if not self.model_path or not Path(self.model_path, "config.json").is_file():
            raise ArealError(f"train engine {cfg.name!r}: path {self.model_path!r} is not a Hugging Face model "
                             f"directory (no config.json)")
        total_steps = cfg.optimizer.total_steps or self.run.total_steps
        if cfg.optimizer.lr_scheduler != "constant" and not total_steps:
            raise ArealError(f"train engine {cfg.name!r}: optimizer.lr_scheduler={cfg.optimizer.lr_scheduler!r} "
                             f"needs optimizer.total_steps (or a run context with total_steps)")
        self.config = cfg = _with_run_layout(cfg, self.run)
        self.hf_config = AutoConfig.from_pretrained(self.model_path)
        self.layout = Layout.of(self.hf_config, "te" if cfg.layer_spec == "transformer_engine" else "local")
        device = engine_device(cfg.device, self.run, cfg.name)
        self.dist = join_process_group(device)
        try:
            model_lib.check_divisible(cfg, self.layout, self.dist.world_size)
            _check_megatron_runs_on(self.dist.device, cfg.name)
            self._build(total_steps)
        except BaseException:
            self.destroy()
            raise

    def _build(self, total_steps: int | None) -> None:
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        cfg = self.config
        _join_model_parallel(cfg)
        self._joined_model_parallel = True
        seed = int(cfg.seed if cfg.seed is not None else self.run.seed)
        torch.manual_seed(seed)
        model_parallel_cuda_manual_seed(seed)
        self.model = model_lib.build(self.hf_config, self.layout, cfg)
        model_lib.load_hf_weights(self.model, model_lib.read_hf_state(self.model_path), self.layout, cfg)
        self.model.to(self.dist.device)
        opt = cfg.optimizer
        self.optimizer = torch.optim.AdamW(list(self.model.parameters()), lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                           weight_decay=opt.weight_decay)
        checkpoint.materialise_optimizer_state(self.optimizer)
        self.scheduler = build_scheduler(self.optimizer, opt, total_steps)

    def destroy(self) -> None:
        if self.dist is None:
            return
        self.model = self.optimizer = self.scheduler = None
        if self._joined_model_parallel:
            _leave_model_parallel()
            self._joined_model_parallel = False
        leave_process_group()
        self.dist.accelerator.empty_cache()
        self.dist = None

    # ------------------------------------------------------ parallel layout
    @property
    def _dp(self) -> tuple[int, int]:
        from megatron.core import parallel_state as ps

        return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()

    @property
    def _reports(self) -> bool:
        """Whether this rank holds the replica's outputs: last pipeline stage, tensor rank 0."""
        from megatron.core import parallel_state as ps

        return ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0

    @property
    def _exchanges_tokens(self) -> bool:
        """Whether MoE layers exchange tokens between data-parallel ranks (expert parallel)."""
        return self.config.expert_parallel > 1

    def _my_micro_batches(self, batch: SequenceBatch) -> tuple[tuple[int, ...], ...]:
        """This replica's micro-batches (sequence indices); with expert parallel every replica
        gets the same number, some possibly empty."""
        rank, size = self._dp
        plan = plan_micro_batches(batch.seqlens.tolist(), self.config.max_tokens_per_mb, size)
        return plan.ranks[rank] if self._exchanges_tokens else tuple(ix for ix in plan.ranks[rank] if ix)

    # --------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, batch: SequenceBatch, *, temperature: float = 1.0) -> torch.Tensor:
        """[T] logprobs of ``input_ids[t]`` given its prefix (0 at sequence starts)."""
        self._require_initialized()
        self.model.eval()
        micro = self._my_micro_batches(batch)
        out = torch.zeros(batch.num_tokens, dtype=torch.float32, device=self.dist.device)

        def consume(mb: SequenceBatch, values: torch.Tensor, entropy: torch.Tensor):
            return values.sum() * 0.0, {"values": values.detach()}

        results = self._schedule(batch, micro, consume, temperature, forward_only=True)
        if self._reports:
            for ix, reduced in zip(micro, results):
                if not ix:
                    continue
                out[_token_positions(batch, ix).to(out.device)] = reduced["values"].float()
        dist.all_reduce(out)  # replicas hold disjoint tokens; only reporting ranks wrote any
        return out.to(batch.cu_seqlens.device)

    # ----------------------------------------------------------------- train
    def train_batch(self, batch: SequenceBatch, loss_fn: LossFn, loss_weight_fn: LossWeightFn) -> dict[str, float]:
        """One optimizer step on ``batch``; returns loss, grad_norm, lr and loss_fn's stats."""
        from megatron.core import parallel_state as ps

        self._require_initialized()
        self.model.train()
        micro = self._my_micro_batches(batch)
        weights = [float(loss_weight_fn(batch.select(ix))) if ix else 0.0 for ix in micro]
        total_weight, = all_reduce_sum([sum(weights)], self.dist.device, ps.get_data_parallel_group())
        scale = 1.0 / total_weight if total_weight > 0 else 0.0

        def objective(mb: SequenceBatch, values: torch.Tensor, entropy: torch.Tensor):
            loss, stats = loss_fn(values, entropy, mb)
            return loss * scale, {"loss": float(loss.detach()), **{k: float(v) for k, v in (stats or {}).items()}}

        self.optimizer.zero_grad(set_to_none=False)
        reduced = self._schedule(batch, micro, objective, self.config.temperature, forward_only=False)
        self._reduce_gradients()
        grad_norm = self._clip_gradients()
        assert self.optimizer is not None and self.scheduler is not None  # _require_initialized
        lr, update = optimizer_step(self.optimizer, self.scheduler, grad_norm, total_weight, set_to_none=False)

        stat_sums: dict[str, float] = defaultdict(float)
        stat_weights: dict[str, float] = defaultdict(float)
        for weight, stats in zip(weights, reduced):
            for key, value in stats.items():
                stat_sums[key] += value if key == "loss" else weight * value
                stat_weights[key] += weight
        stats = self._reduce_stats(stat_sums, stat_weights)
        loss_total = stats.pop("loss_sum", 0.0)
        return {"loss": loss_total / total_weight if total_weight > 0 else 0.0, "grad_norm": grad_norm, "lr": lr,
                "update_skipped": 0.0 if update else 1.0, "loss_weight": total_weight,
                "n_tokens": float(batch.num_tokens), "n_seqs": float(batch.num_seqs),
                "n_micro_batches": float(len(micro)), **stats}

    def _schedule(self, batch: SequenceBatch, micro: tuple[tuple[int, ...], ...], consume, temperature: float,
                  forward_only: bool) -> list[dict[str, Any]]:
        """Run ``micro`` through megatron's forward-backward schedule; ``consume(mb, logprobs,
        entropy) -> (loss, stats)`` on the last stage. Returns the stats per micro-batch there."""
        from megatron.core.pipeline_parallel import get_forward_backward_func
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        # a replica with no sequence (or an empty micro-batch) still takes part in the collectives
        device, pack = self.dist.device, self.config.pack_sequences
        micro_data: list[tuple[SequenceBatch | None, rows_lib.Rows]] = [
            (batch.select(ix).to(device), rows_lib.build(batch, ix, device, pack)) if ix
            else (None, rows_lib.empty(device)) for ix in micro or ((),)]
        rows = max(r.ids.shape[0] for _, r in micro_data)
        length = max(r.ids.shape[1] for _, r in micro_data)
        if self._exchanges_tokens:  # expert-parallel ranks exchange tokens of one shape
            rows, length = (int(v) for v in _all_max([rows, length], device))
        if self.config.pipeline_parallel > 1 or self._exchanges_tokens:  # one fixed shape
            micro_data = [(mb, r.padded_to(rows, length)) for mb, r in micro_data]
        vocab = self.hf_config.vocab_size

        def loss_func(mb, placed, logits):
            packed = placed.select(gather_from_tensor_model_parallel_region(logits)[..., :vocab])  # [T, V]
            if mb is None:
                return packed.sum() * 0.0, torch.tensor(0), {}
            values, entropy = packed_logprobs_entropy(packed, mb["input_ids"], mb.position_ids == 0, temperature,
                                                      self.config.logprob_chunk_tokens)
            loss, stats = consume(mb, values, entropy)
            return loss, torch.tensor(mb.num_tokens), stats

        def forward_step(data_iterator, model):
            mb, placed = next(data_iterator)
            return model(placed.ids, placed.positions(), placed.mask), partial(loss_func, mb, placed)

        out = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(micro_data), model=[self.model],
            num_microbatches=len(micro_data), seq_length=length, micro_batch_size=rows, forward_only=forward_only)
        return list(out)[:len(micro)] if micro else []

    def _reduce_gradients(self) -> None:
        """Sum gradients over data-parallel replicas (a routed expert's over its expert-data-parallel
        group), and tied embeddings over the first and last stage."""
        from megatron.core import parallel_state as ps

        groups = {False: (ps.get_data_parallel_group(), self._dp[1]),
                  True: (ps.get_expert_data_parallel_group(), ps.get_expert_data_parallel_world_size())}
        for name, p in self.model.named_parameters():
            group, size = groups[sharding.is_expert(name)]
            if size > 1:
                dist.all_reduce(p.grad, group=group)
        if self.layout.tied and self.config.pipeline_parallel > 1 and \
                (ps.is_pipeline_first_stage() or ps.is_pipeline_last_stage()):
            shared = self.model.shared_embedding_or_output_weight()
            dist.all_reduce(shared.grad, group=ps.get_embedding_group())

    def _clip_gradients(self) -> float:
        """Global L2 norm of the gradient (each parameter counted once across t·p ranks, a routed
        expert's once across its expert-tensor·expert·pipeline ranks); clip to
        ``optimizer.gradient_clipping``."""
        from megatron.core import parallel_state as ps

        duplicate = None
        if self.layout.tied and self.config.pipeline_parallel > 1 and ps.is_pipeline_last_stage() \
                and not ps.is_pipeline_first_stage():
            duplicate = self.model.shared_embedding_or_output_weight()  # the first stage counts it
        squares = {expert: torch.zeros((), dtype=torch.float64, device=self.dist.device) for expert in (False, True)}
        for name, p in self.model.named_parameters():
            _, tp_rank, _ = sharding.Placement.tensor_split(name)
            if p is not duplicate and (tp_rank == 0 or getattr(p, "tensor_model_parallel", False)):
                squares[sharding.is_expert(name)] += p.grad.double().pow(2).sum()
        dist.all_reduce(squares[False], group=ps.get_model_parallel_group())
        if self.layout.num_experts:
            dist.all_reduce(squares[True], group=ps.get_expert_tensor_model_pipeline_parallel_group())
        norm = float((squares[False] + squares[True]).sqrt())
        params = list(self.model.parameters())
        limit = self.config.optimizer.gradient_clipping
        if limit is not None and math.isfinite(norm) and norm > limit:
            for p in params:
                p.grad.mul_(limit / (norm + 1e-6))
        return norm

    def _reduce_stats(self, sums: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
        """``loss_sum`` and the loss-weighted means of loss_fn's stats over every replica."""
        gathered: list = [None] * self.dist.world_size
        dist.all_gather_object(gathered, (dict(sums), dict(weights)) if self._reports else ({}, {}))
        total_s: dict[str, float] = defaultdict(float)
        total_w: dict[str, float] = defaultdict(float)
        for s, w in gathered:
            for k in s:
                total_s[k] += s[k]
                total_w[k] += w[k]
        out = {k: total_s[k] / total_w[k] if total_w[k] > 0 else 0.0 for k in sorted(total_s) if k != "loss"}
        out["loss_sum"] = total_s.get("loss", 0.0)
        return out

    # ------------------------------------------------------- checkpointing
    def save(self, path: str) -> None:
        """Recovery checkpoint: model and AdamW state with ``dist_checkpointing`` (loadable at another
        t/p layout), LR schedule, per-rank RNG."""
        self._require_initialized()
        checkpoint.save(self, path)

    def load(self, path: str) -> None:
        """Restore what :meth:`save` wrote, at this engine's (possibly different) parallel layout."""
        self._require_initialized()
        checkpoint.load(self, path)

    # -------------------------------------------------------------- export
    def named_full_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Full weights in HF names; collective on every rank, yields on rank 0 only."""
        self._require_initialized()
        yield from self.gathered_hf(lambda p: p)

    def gathered_hf(self, of: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
        """``of(parameter)`` for every parameter (the weight itself, its gradient...) gathered to
        full tensors under HF (file) names, ``weight_bucket_bytes`` at a time (see
        :mod:`areal_megatron.streaming`); collective on every rank, yields on rank 0 only."""
        tied_copy = "output_layer.weight" if self.layout.tied else None
        for bucket in streaming.stream(self.model, self.layout, self.hf_config.vocab_size, of,
                                       self.config.weight_bucket_bytes, skip=lambda name: name == tied_copy):
            while bucket:  # emptied as it goes: no tensor of this bucket is held while the next gathers
                name, tensor = bucket.pop(0)
                yield from to_hf(name, tensor, self.layout)
                del name, tensor

    def export_hf(self, path: str) -> None:
        """Write an HF directory (safetensors, config, tokenizer, generation config); rank 0 writes."""
        self._require_initialized()
        weights = dict(self.named_full_weights())
        if self.dist.rank == 0:
            needed = sum(t.numel() * t.element_size() for t in weights.values()) + (1 << 20)
            files.write_atomically(path, needed, f"weight export {Path(path).name}",
                                   lambda tmp: checkpoint.write_hf_dir(weights, self.hf_config, tmp, self.model_path))
        dist.barrier()

    # ------------------------------------------------------------- helpers
    def _require_initialized(self) -> None:
        if self.model is None:
            raise ArealError(f"train engine {self.config.name!r}: call initialize() first")


def _with_run_layout(cfg: MegatronEngineConfig, run: RunContext) -> MegatronEngineConfig:
    """The config with t, p and e from the run's allocation part (``run.parallel``) where it sets them."""
    update = {}
    for field, size in (("tensor_parallel", run.parallel.tensor), ("pipeline_parallel", run.parallel.pipeline),
                        ("expert_parallel", run.parallel.expert)):
        mine = getattr(cfg, field)
        if size > 1 and mine not in (1, size):
            raise ArealError(f"train engine {cfg.name!r}: {field}={mine} but the allocation part "
                             f"{run.parallel.part or run.parallel!r} says {size}; set one of them")
        if size > 1:
            update[field] = size
    return cfg.model_copy(update=update)


_model_parallel_users = 0  # engines in this process sharing megatron's (global) parallel groups


def _join_model_parallel(cfg: MegatronEngineConfig) -> None:
    """Create megatron's tensor/pipeline/data-parallel groups, or share the existing ones (an actor
    and a reference engine in one process) when their layout is the same."""
    from megatron.core import parallel_state as ps

    global _model_parallel_users
    want = (cfg.tensor_parallel, cfg.pipeline_parallel, cfg.expert_parallel)
    if ps.model_parallel_is_initialized():
        have = (ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size(),
                ps.get_expert_model_parallel_world_size())
        if have != want:
            raise ArealError(f"train engine {cfg.name!r}: tensor/pipeline/expert_parallel = {'/'.join(map(str, want))}, "
                             f"but another megatron engine in this process uses {'/'.join(map(str, have))} "
                             "(megatron's parallel groups are per process: give every engine the same layout)")
    else:
        ps.initialize_model_parallel(tensor_model_parallel_size=cfg.tensor_parallel,
                                     pipeline_model_parallel_size=cfg.pipeline_parallel,
                                     expert_model_parallel_size=cfg.expert_parallel)
    _model_parallel_users += 1


def _leave_model_parallel() -> None:
    from megatron.core import parallel_state as ps

    global _model_parallel_users
    _model_parallel_users -= 1
    if _model_parallel_users == 0 and ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()


def _check_megatron_runs_on(device: torch.device, engine: str) -> None:
    """megatron-core 0.16 calls CUDA directly (``torch.cuda.current_device()`` and more): on a
    machine without CUDA it cannot run unless those calls are redirected (the plugin's tests do)."""
    if device.type == "cuda":
        return
    try:
        torch.cuda.current_device()
    except (AssertionError, RuntimeError) as exc:
        raise ArealError(f"train engine {engine!r}: megatron-core calls CUDA directly and cannot run on device "
                         f"{device.type!r} ({exc}); use device: cuda (see docs/megatron.md)") from None


def _all_max(values: list[int], device: torch.device) -> list[int]:
    """Element-wise maximum of ``values`` over all ranks."""
    t = torch.tensor(values, dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _token_positions(batch: SequenceBatch, indices: tuple[int, ...]) -> torch.Tensor:
    cu = batch.cu_seqlens.tolist()
    return torch.cat([torch.arange(cu[i], cu[i + 1]) for i in indices])
