"""areal-sglang: SGLang inference servers as an areal inference backend."""
