"""Config models, loading (YAML + env + dotted overrides) and validation."""
