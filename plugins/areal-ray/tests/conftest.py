"""A real two-node Ray cluster for the session (areal_ray.testing.RayCluster), stopped afterwards."""

from __future__ import annotations

import pytest

from areal_ray.testing import RayCluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A head (``node_a``) and a worker (``node_b``), 2 CPUs each, on this machine's address."""
    cluster = RayCluster.start(tmp_path_factory.mktemp("ray"))
    try:
        yield cluster
    finally:
        cluster.cleanup()
