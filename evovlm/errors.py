"""User-facing errors.

Anything the user can fix (a wrong path, a mismatched architecture, a malformed
file) raises :class:`EvoVLMError`. The CLI prints its message without a traceback
and exits with status 2; library callers can catch it.
"""


class EvoVLMError(Exception):
    """A problem with the user's input, explained in the message."""
