"""areal-math: math final-answer rewards (``gsm8k``, ``math_answer``) and a GSM8K data converter."""
