"""areal-example: a third-party plugin adding an algorithm and a reward to areal."""
