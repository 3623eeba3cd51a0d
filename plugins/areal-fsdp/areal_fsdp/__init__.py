"""areal-fsdp: the ``fsdp`` train engine (PyTorch FSDP2 ``fully_shard`` with sequence packing)."""
