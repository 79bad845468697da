"""Progress bars that suit where they are written.

On a terminal they are ordinary tqdm bars. Written to a file or a pipe (a CI log, ``2> log``,
``| tee``), a bar redrawn with carriage returns and cursor escapes leaves debris, so there it
prints one plain line per update interval instead, and nothing for bars that vanish on close.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable, TextIO

from tqdm.auto import tqdm

# Seconds between the lines of a bar written to a file or pipe.
LOG_INTERVAL = 30.0
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _LineWriter:
    """A file-like object that turns tqdm's redraws into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        line = _ESCAPES.sub("", text).replace("\r", "").strip()
        if line:
            self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable: Iterable | None = None, *, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; on a file or pipe, one line per ``LOG_INTERVAL``."""
    stream = file if file is not None else sys.stderr
    if not _is_terminal(stream):
        kwargs.pop("position", None)  # nested bars move the cursor
        kwargs.update(file=_LineWriter(stream), mininterval=max(kwargs.get("mininterval", 0.0), LOG_INTERVAL),
                      dynamic_ncols=False, ncols=100)
        return tqdm(iterable, **kwargs)
    return tqdm(iterable, file=stream, **kwargs)
