"""``areal train``: load the run config, start the run's processes, train, stop everything.

    areal train --config run.yaml [dotted.key=value ...]
    areal train --config run.yaml recover=auto          # resume from the last checkpoint

What happens (driver = the process running ``areal train``):

1. the config is loaded and validated (all errors at once), temperatures reconciled
   (:func:`areal_core.trainer.rl.reconcile_temperatures`), and the resolved config written to
   ``RUN_DIR/config.yaml`` (RUN_DIR = ``fileroot/experiment_name/trial_name``); logs also go to
   ``RUN_DIR/log.jsonl``;
2. the scheduler (``scheduler: {name: local}``, any :class:`~areal_core.api.Scheduler`) is
   prepared, starts ``inference.n_servers`` servers and waits for their health. Servers and ranks
   get the run's API key in ``AREAL_API_KEY`` (:mod:`areal_core.auth`: generated per run unless
   set), never on a command line; a run that fails because servers stopped answering ends with
   what the scheduler knows of each (pid, exit status or signal, log tail);
3. one trainer rank runs inside the driver, or ``scheduler.trainer_ranks`` > 1 rank processes
   start through ``scheduler.launch_trainers`` (``python -m areal_core.trainer.entry --rank-of
   RUN_DIR``; the scheduler sets torchrun-style ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
   ``MASTER_PORT`` and ``AREAL_HOST_ADDR``), rank 0 owning the rollout side;
4. on success, error, Ctrl-C or SIGTERM every child process is stopped.

Servers and ranks come from ``scheduler.allocation`` (e.g. ``vllm:d2+fsdp:d4``) or its shorthands
``inference.n_servers`` / ``scheduler.trainer_ranks`` (read from the config bases
:class:`~areal_core.config.base.InferenceConfigBase`, ``SchedulerConfigBase``; a plugin config that
does not subclass them means one server / one rank), reconciled by
:func:`areal_core.config.allocation.apply_allocation`.

A fresh run (``recover=off``) refuses a run directory that already holds checkpoints or metrics:
pass ``recover=auto`` to continue it or pick another ``trial_name``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from areal_core.api.protocols import Scheduler, SupportsServerStatus, missing_members
from areal_core.auth import API_KEY_ENV, run_key
from areal_core.config.allocation import apply_allocation, require_parallel_support
from areal_core.config.loader import RESOLVED_CONFIG_FILE, ResolvedConfig, load_config, save_resolved
from areal_core.config.schema import RunConfig
from areal_core.errors import ArealError
from areal_core.logging import configure_logging, get_logger
from areal_core.rollout.client import InferenceUnavailableError

log = get_logger(__name__)


def run_dir_of(cfg: ResolvedConfig[RunConfig]) -> Path:
    run = cfg.run
    return Path(run.fileroot).expanduser() / run.experiment_name / run.trial_name


def train_main(argv: list[str] | None = None) -> int:
    """The ``areal train`` command line."""
    parser = argparse.ArgumentParser(prog="areal train", description="Run RL training (see docs/async-rl.md).")
    parser.add_argument("--config", type=Path, help="YAML run config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. rollout.batch_size=8")
    args = parser.parse_args(argv)
    cfg = load_config(config_path=args.config, overrides=args.overrides)
    _terminate_as_interrupt()
    run_dir = run_training(cfg)
    print(f"run finished: {run_dir}  (metrics: {run_dir / 'metrics.jsonl'}; plot: areal plot {run_dir})")
    return 0


def run_training(cfg: ResolvedConfig[RunConfig], registry=None) -> Path:
    """Everything ``areal train`` does after loading the config; returns the run directory."""
    from areal_core.hub import resolve_model_path
    from areal_core.trainer.rl import reconcile_temperatures

    run = cfg.run
    run_dir = run_dir_of(cfg)
    _check_run_dir(run_dir, run.recover)
    reconcile_temperatures(cfg)
    _check_paths(cfg)  # a model_path that does not resolve is reported with every other problem of the config
    run.model_path = resolve_model_path(run.model_path)  # a hub id becomes its cached snapshot directory
    allocation = apply_allocation(cfg)  # before the resolved config is saved: rank processes read it
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(level=run.logging.level, json_logs=run.logging.json_logs, file=run_dir / "log.jsonl")
    quiet_libraries()
    save_resolved(cfg, run_dir)
    log.info("run directory", run_dir=str(run_dir), recover=run.recover)

    scheduler = cfg.create("scheduler", registry=registry)
    if not isinstance(scheduler, Scheduler):
        raise ArealError(f"scheduler {run.scheduler['name']!r} cannot run `areal train`: it does not implement the "
                         f"Scheduler protocol (missing: {', '.join(missing_members(scheduler, Scheduler))})")
    backend = cfg.create("inference", registry=registry)
    require_parallel_support(backend, f"inference backend {run.inference['name']!r}", allocation.role("inference").layout())
    n_servers, ranks = allocation.n_servers, allocation.trainer_ranks
    scheduler.prepare(run_dir)
    with run_key() as key:
        key_env = {API_KEY_ENV: key}  # servers require it, every client of the run sends it
        server_status = scheduler if isinstance(scheduler, SupportsServerStatus) else None
        with scheduler:
            addrs = scheduler.start_inference_servers(backend, run.model_path, n_servers, env=key_env)
            try:
                if ranks == 1:
                    run_rank(cfg, run_dir, addrs, registry=registry, host_addr=scheduler.host_addr(),
                             server_status=server_status)
                else:
                    argv = [sys.executable, "-m", "areal_core.trainer.entry", "--rank-of", str(run_dir),
                            "--servers", ",".join(addrs)]
                    handles = scheduler.launch_trainers(argv, ranks, key_env)
                    log.info("trainer ranks started", ranks=ranks, logs=str(run_dir / "logs"))
                    scheduler.wait(handles)
            except InferenceUnavailableError as exc:
                if server_status is None:
                    raise
                states = "\n  ".join(server_status.describe_server(a) for a in addrs)
                raise InferenceUnavailableError(f"{exc}\ninference servers now:\n  {states}") from None
    return run_dir


def run_rank(cfg: ResolvedConfig[RunConfig], run_dir: Path, addrs: list[str], *, rank: int = 0, world_size: int = 1,
             registry=None, host_addr: str = "127.0.0.1", server_status=None) -> None:
    """One trainer rank: set up, train to the end, release everything."""
    from areal_core.trainer.rl import RLTrainer
    from areal_core.trainer.threads import apply_torch_threads

    apply_torch_threads(cfg.run.trainer.torch_threads, cfg.create("inference", registry=registry), addrs,
                        synchronous=cfg.run.rollout.max_head_offpolicyness == 0)
    group = _init_trainer_group(cfg, registry) if world_size > 1 else None
    trainer = RLTrainer(cfg, run_dir, addrs, registry=registry, rank=rank, world_size=world_size, host_addr=host_addr,
                        server_status=server_status)
    try:
        trainer.setup()
        trainer.run_loop()
    finally:
        trainer.close()
        if group is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def rank_main(argv: list[str] | None = None) -> int:
    """Entry of a trainer rank process started by the driver (``--rank-of RUN_DIR``)."""
    parser = argparse.ArgumentParser(prog="python -m areal_core.trainer.entry")
    parser.add_argument("--rank-of", type=Path, required=True, help="run directory holding the resolved config")
    parser.add_argument("--servers", required=True, help="comma-separated host:port of the inference servers")
    args = parser.parse_args(argv)
    cfg = load_config(config_path=args.rank_of / RESOLVED_CONFIG_FILE, env_prefix=None)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    configure_logging(level=cfg.run.logging.level, json_logs=cfg.run.logging.json_logs)
    quiet_libraries()
    _terminate_as_interrupt()
    from areal_core.trainer.rl import HOST_ADDR_ENV

    run_rank(cfg, args.rank_of, args.servers.split(","), rank=rank, world_size=world,
             host_addr=os.environ.get(HOST_ADDR_ENV, "127.0.0.1"))
    return 0


def quiet_libraries() -> None:
    """No per-request lines from httpx and no progress bars from HF libraries in the run's logs."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _init_trainer_group(cfg: ResolvedConfig[RunConfig], registry):
    import torch.distributed as dist

    device = cfg.create("device", registry=registry)
    if not dist.is_initialized():
        dist.init_process_group(device.comm_backend, init_method="env://")
    return dist.group.WORLD


def _check_run_dir(run_dir: Path, recover: str) -> None:
    if recover == "auto":
        return
    leftovers = [p.name for p in (run_dir / "checkpoints", run_dir / "metrics.jsonl") if p.exists()]
    if leftovers:
        raise ArealError(f"recover=off but {run_dir} already holds a run ({', '.join(leftovers)}): pass recover=auto to "
                         f"continue it, or choose another trial_name (or delete the directory)")


def _check_paths(cfg: ResolvedConfig[RunConfig]) -> None:
    """Model directory, datasets and batch arithmetic, before any process starts."""
    from areal_core.trainer.preflight import check_run

    check_run(cfg)


def _terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so ``with scheduler`` stops the children."""
    def handler(signum, frame):  # signal handler signature
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test thread)
        pass


if __name__ == "__main__":
    sys.exit(rank_main())
