"""Registers the ``ray`` scheduler (entry point ``areal`` -> this module; imports no ray)."""

from areal_core.plugin import Component, hookimpl


@hookimpl
def areal_register_schedulers():
    return [
        Component("ray", "areal_ray.scheduler:RayScheduler", "areal_ray.config:RaySchedulerConfig",
                  "inference servers and trainer ranks on a Ray cluster, placed by scheduler.allocation"),
    ]
