"""Errors the `launch` command reports as one line and exit code 2 (bad input, never a traceback)."""


class UsageError(Exception):
    """Bad user input: an unknown grid or run, a malformed flag, a refused run folder.

    The message is shown as is, so it must name the bad value and what would be accepted.
    """
