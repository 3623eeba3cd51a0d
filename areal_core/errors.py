"""The one exception type users see: a message that names the field, value or plugin at fault."""


class ArealError(Exception):
    """An error with a complete, user-facing message; the CLI prints it without a traceback."""
