"""areal-grpo: the PPO family of RL algorithms as presets of one decoupled-PPO path."""
