"""areal-agent: train agents through an OpenAI-compatible proxy; multi-turn and tool-use workflows."""
