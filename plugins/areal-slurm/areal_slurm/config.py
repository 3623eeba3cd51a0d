"""Options of the ``slurm`` scheduler (``scheduler: {name: slurm, ...}``)."""

from __future__ import annotations

from pydantic import Field

from areal_core.plugin import SchedulerConfigBase


class SlurmSchedulerConfig(SchedulerConfigBase):
    """The sbatch job that holds the run's nodes, and the srun steps in it."""

    name: str = Field("slurm", description="registered name of the scheduler")
    partition: str | None = Field(None, description="partition to submit to (unset: the cluster's default)")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    time_limit: str = Field("04:00:00", description="sbatch --time of the job (the whole run)")
    nodes: int = Field(1, ge=1, description="nodes the job holds; processes fill them in order (servers first)")
    cpus_per_server: int = Field(1, ge=1, description="CPUs of each server's srun step")
    cpus_per_trainer: int = Field(1, ge=1, description="CPUs of each trainer rank's srun step")
    gpus_per_node: int = Field(0, ge=0, description="GPUs the job holds per node (--gpus-per-node; 0: none)")
    extra_sbatch: list[str] = Field(default_factory=list, description="further sbatch options, e.g. ['--constraint=a100']")
    dry_run: bool = Field(False, description="print the sbatch script and the planned srun steps, submit nothing, exit")
    job_start_timeout_s: float = Field(600.0, gt=0, description="wait this long for the job to start running")
    server_start_timeout_s: float = Field(300.0, gt=0, description="wait at most this long for a server's health")
    stop_timeout_s: float = Field(10.0, gt=0, description="after SIGTERM to a step, wait this long before SIGKILL")
