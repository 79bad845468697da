"""Reading a user's YAML file (recipe, evolution config, models list) with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from evovlm.errors import EvoVLMError

# A recipe or config is a few kilobytes; anything this large is a mistake (or an attack).
MAX_YAML_BYTES = 4 * 2**20


def read_yaml_file(path: str | os.PathLike, what: str) -> Any:
    """The parsed document in ``path``; ``what`` names it in errors ("recipe file", ...).

    ``yaml.safe_load`` builds only plain data (no Python objects). Every defect of the file
    (missing, unreadable, not UTF-8, too large, not YAML) is an :class:`EvoVLMError`.
    """
    path = Path(path)
    if not path.is_file():
        raise EvoVLMError(f"{what} {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise EvoVLMError(f"{path}: {path.stat().st_size:,} bytes is too large for a {what} "
                              f"(at most {MAX_YAML_BYTES:,})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvoVLMError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8") from None
    except OSError as exc:
        raise EvoVLMError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvoVLMError(f"{path}: not valid YAML ({exc})") from None
    except RecursionError:
        raise EvoVLMError(f"{path}: nested too deeply to be a {what}") from None
