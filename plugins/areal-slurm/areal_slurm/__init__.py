"""areal scheduler ``slurm``: a run's processes as srun steps of one sbatch job (see docs/cluster.md)."""
