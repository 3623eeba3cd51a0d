"""The RL trainer loop, checkpointing and recovery."""
