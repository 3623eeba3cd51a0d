"""A real one-node Slurm cluster for the session (slurm_cluster.py); skipped where slurm-wlm is absent."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0 or not all(shutil.which(c) for c in ("slurmctld", "slurmd", "munged", "sbatch")):
        pytest.skip("needs root and slurm-wlm + munge (plugins/areal-slurm/tests/install_slurm.sh)")
    cluster = SlurmCluster.start(Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp")))
    saved = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)  # sbatch/srun/squeue in this process and the ones it starts
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.cleanup()
