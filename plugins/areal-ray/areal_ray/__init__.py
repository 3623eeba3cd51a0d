"""areal scheduler ``ray``: a run's processes on a Ray cluster (see docs/cluster.md)."""
