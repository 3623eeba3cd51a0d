"""Schedulers that start the processes of a run (inference servers, trainer ranks)."""
