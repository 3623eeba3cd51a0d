"""areal-embedded: an inference server on torch + transformers that speaks the SGLang native protocol."""
