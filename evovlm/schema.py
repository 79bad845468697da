"""Declarative config sections (pydantic v2) whose errors read like the rest of EvoVLM's.

Recipes, evolution configs and the app's models list are :class:`Section` models. :func:`parse`
validates a YAML document against one and turns the first problem into an :class:`EvoVLMError`
that names where it is, in the file's own terms: ``config: ps.models[1].density: ...``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AllowInfNan, BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from evovlm.errors import EvoVLMError

# A finite number (an int is fine; a bool or "1.5" is not): a weight of .nan writes an all-NaN model.
Number = Annotated[float, Strict(), AllowInfNan(False)]
Count = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if not pair[0] < pair[1]:
        raise ValueError(f"low {pair[0]} must be below high {pair[1]}")
    return pair


Range = Annotated[tuple[Number, Number], AfterValidator(_ordered)]
UNION_TAG = "="  # tags of tagged unions ("fitness=benchmark") are left out of error locations


class Section(BaseModel):
    """A mapping with known keys: an unknown one is an error that lists the known ones."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {field.alias or name for name, field in cls.model_fields.items()}
            unknown = sorted(set(map(str, data)) - known - set(cls.model_fields))  # names work in code
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        elif not isinstance(data, BaseModel):
            raise ValueError(f"expected a mapping, got {data!r}")
        return data


SectionT = TypeVar("SectionT", bound=BaseModel)


def location(loc: tuple[Any, ...]) -> str:
    """``('ps', 'models', 1, 'density')`` -> ``ps.models[1].density``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif UNION_TAG not in str(part) and part != "[key]":  # "[key]": a mapping's key is what is wrong
            text += f".{part}" if text else str(part)
    return text


def describe(error: dict, where: str, at: tuple[Any, ...] = ()) -> str:
    """One pydantic error as a sentence: where, then what is wrong."""
    spot = location(tuple(at) + tuple(error["loc"]))
    prefix = f"{where}: {spot}" if spot else where
    if error["type"] == "value_error":  # a validator's message; ".key: ..." names a key inside the value
        message = str(error["ctx"]["error"])
        return f"{prefix}{message}" if message.startswith(".") else f"{prefix}: {message}"
    if error["type"] == "missing":
        return f"{prefix}: missing (required)"
    if error["type"] in ("float_type", "int_type", "finite_number", "float_parsing"):
        kind = "an integer" if error["type"] == "int_type" else "a finite number"
        return f"{prefix}: expected {kind}, got {error['input']!r}"
    if error["type"] in ("greater_than_equal", "greater_than"):
        op = ">=" if error["type"] == "greater_than_equal" else ">"
        bound = error["ctx"].get("ge", error["ctx"].get("gt"))
        kind = "an integer" if isinstance(bound, int) else "a number"
        return f"{prefix}: expected {kind} {op} {bound}, got {error['input']!r}"
    message = f"{prefix}: {error['msg'][:1].lower()}{error['msg'][1:]}"
    shown = error.get("input")
    return message if shown is None or isinstance(shown, dict) else f"{message}, got {shown!r}"


def parse(model: type[SectionT], data: Any, where: str, at: tuple[Any, ...] = ()) -> SectionT:
    """``data`` validated as ``model``; the first problem is an :class:`EvoVLMError` naming where it is.

    ``at``: the location of ``data`` inside the document ``where`` names (``("ps", "optimizer")``).
    """
    if not isinstance(data, (dict, BaseModel)):
        raise EvoVLMError(f"{where}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EvoVLMError(describe(exc.errors(include_url=False)[0], where, at)) from None


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
