"""The one exception type for mistakes a user can make and fix."""


class AdformerError(Exception):
    """Bad input or configuration; the message says what went wrong and what to do.

    The CLI prints the message (no traceback) and exits with status 2.
    """
