"""areal-arith: a small verifiable arithmetic task (sums of single digits) for the CPU quickstart."""
