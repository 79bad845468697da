"""Reading a user's YAML file (recipe, evolution config, models list) with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from evovlm.errors import EvoVLMError


def read_yaml_file(path: str | os.PathLike, what: str) -> Any:
    """The parsed document in ``path``; ``what`` names it in errors ("recipe file", ...)."""
    path = Path(path)
    if not path.is_file():
        raise EvoVLMError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EvoVLMError(f"{path}: not valid YAML ({exc})") from None
