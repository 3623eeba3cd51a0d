"""areal-vllm: vLLM's OpenAI-compatible server as an areal inference backend."""
