"""argparse types for numbers: an out-of-range value is a usage error (exit 2 and a message)
at parse time, not a traceback later."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def count(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum:,}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    parse.__name__ = "count"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, *,
           above: float | None = None) -> Callable[[str], float]:
    """A finite float in [minimum, maximum] (or strictly above ``above``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum) or (
                above is not None and value <= above):
            low = f"above {above}" if above is not None else f"at least {minimum}" if minimum is not None else ""
            high = f"at most {maximum}" if maximum is not None else ""
            raise argparse.ArgumentTypeError(f"must be {' and '.join(p for p in (low, high) if p)}, got {value}")
        return value
    parse.__name__ = "number"
    return parse


# Upper bounds that no real use reaches; beyond them a typo would run for hours or exhaust memory.
MAX_NEW_TOKENS = 65_536
MAX_RESAMPLES = 1_000_000
