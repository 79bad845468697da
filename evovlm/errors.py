"""User-facing errors.

Anything the user can fix (a wrong path, a mismatched architecture, a malformed
file) raises :class:`EvoVLMError`. The CLI prints its message without a traceback
and exits with status 2; library callers can catch it.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator


class EvoVLMError(Exception):
    """A problem with the user's input, explained in the message."""


# How an error names a setting depends on where the user set it: `--data-seed` on the command
# line, `data_seed:` in an evolve config. Library code names settings through option(); a front
# end that is not a command line says how it spells them with option_style().
_OPTION_STYLE: ContextVar[Callable[[str], str] | None] = ContextVar("evovlm_option_style", default=None)


def option(name: str) -> str:
    """The user's spelling of setting ``name`` (snake_case): ``--name-with-dashes`` by default."""
    style = _OPTION_STYLE.get()
    return style(name) if style is not None else "--" + name.replace("_", "-")


@contextmanager
def option_style(style: Callable[[str], str]) -> Iterator[None]:
    """Within the block, :func:`option` spells settings with ``style``."""
    token = _OPTION_STYLE.set(style)
    try:
        yield
    finally:
        _OPTION_STYLE.reset(token)
