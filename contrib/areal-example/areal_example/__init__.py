"""areal-example: a third-party plugin adding two algorithms (one a policy loss on areal-grpo) and a reward to areal."""
