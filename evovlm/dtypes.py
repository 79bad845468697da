"""The dtype names a user may write (recipes, evolve configs, --dtype), in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evovlm.errors import EvoVLMError

if TYPE_CHECKING:
    import torch

# name -> torch attribute; the short names are mergekit's and the usual abbreviations.
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}


def check_dtype(name: str, where: str) -> str:
    """``name`` if it is a dtype name, else an error naming ``where`` (e.g. ``runtime.dtype``)."""
    if name not in DTYPE_NAMES:
        raise EvoVLMError(f"{where}: unknown dtype {name!r}; use one of {', '.join(DTYPE_NAMES)}")
    return name


def torch_dtype(name: str, where: str = "dtype") -> "torch.dtype":
    import torch

    return getattr(torch, DTYPE_NAMES[check_dtype(name, where)])
