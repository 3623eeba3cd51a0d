"""Registers the ``slurm`` scheduler (entry point ``areal`` -> this module)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_schedulers():
    return [
        Component("slurm", "areal_slurm.scheduler:SlurmScheduler", "areal_slurm.config:SlurmSchedulerConfig",
                  "one sbatch job holds the nodes; servers and trainer ranks run as its srun steps"),
    ]
