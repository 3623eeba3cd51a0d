"""The workflows this plugin registers: ``agent``, ``multi_turn``, ``tool_use``."""
