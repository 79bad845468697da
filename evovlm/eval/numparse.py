"""Reading numbers out of free-form maths replies (MGSM).

``extract_answer_legacy`` reproduces the published protocol (last ``\\d*\\.?\\d+``
run), known to misread "2,125" as 125. ``extract_answer`` is the improved reader:
it honours final-answer markers and understands thousands separators, full-width
characters, signs, decimals and the Japanese multipliers 万/億.
"""

from __future__ import annotations

import re
import unicodedata

# One number, after NFKC. A sign counts only when it is glued to the digits and not
# preceded by a letter/digit ("10-2" is a subtraction, "x-5" a label); "," groups must
# be exact thousands ("1,2,3" is a list); a trailing "." without digits is punctuation.
_NUMBER_RE = re.compile(
    r"(?<![0-9.])"
    r"(?:(?<![0-9A-Za-z.])(?P<sign>[-\u2212]))?"
    r"(?:(?P<int>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?P<frac>\.[0-9]+)?|(?P<bare>\.[0-9]+))"
    # "7万" = 70000, "1万2000" = 12000, "3億" = 300000000 — common in Japanese replies.
    r"(?:(?P<man>万)(?P<man_rest>[0-9]+(?![0-9.,]))?|(?P<oku>億))?"
)

# Final-answer markers (matched after NFKC, so "答え：" arrives as "答え:").
_MARKER_RE = re.compile(
    r"答え\s*(?:は|:)|the\s+(?:final\s+)?answer\s+is|answer\s*:|####|\\boxed\s*\{",
    re.IGNORECASE,
)

_LEGACY_RE = re.compile(r"\d*\.?\d+")  # the published extractor's pattern, kept verbatim


def _value(match: re.Match) -> float:
    digits = (match["int"] or "").replace(",", "") + (match["frac"] or match["bare"] or "")
    value = float(digits)
    if match["man"]:
        value = value * 10_000 + float(match["man_rest"] or 0)
    elif match["oku"]:
        value *= 100_000_000
    return -value if match["sign"] else value


def _numbers(normalized: str) -> list[tuple[int, float]]:
    """(start offset, value) of every number in already-NFKC text."""
    return [(m.start(), _value(m)) for m in _NUMBER_RE.finditer(normalized)]


def parse_number(text: str) -> float | None:
    """The first number in ``text`` ("2,125" -> 2125.0, "$1,000" -> 1000.0), or None.

    Used for gold answers, which MGSM sometimes writes with thousands separators.
    """
    found = _numbers(unicodedata.normalize("NFKC", text))
    return found[0][1] if found else None


def extract_answer(text: str) -> float | None:
    """The final numeric answer of a reply, or None when it contains no number.

    The last final-answer marker (答えは / 答え: / The answer is / Answer: / #### /
    \\boxed{) wins and the first number after it is taken; without a usable marker,
    the last number in the text.
    """
    normalized = unicodedata.normalize("NFKC", text)
    found = _numbers(normalized)
    if not found:
        return None
    markers = list(_MARKER_RE.finditer(normalized))
    if markers:
        after = markers[-1].end()
        for start, value in found:
            if start >= after:
                return value
    return found[-1][1]


def extract_answer_legacy(text: str) -> float | None:
    """The published extractor: the last ``\\d*\\.?\\d+`` match as a float.

    Kept to compare with the paper's numbers; it reads "2,125" as 125 and
    "答えは30です（1時間は60分）" as 60.
    """
    matches = _LEGACY_RE.findall(text)
    return float(matches[-1]) if matches else None
