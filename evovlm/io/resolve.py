"""Turn a model reference (local path, ``PREFIX:NAME`` or an HF repo id) into a local directory.

Nothing here touches the network: repo ids resolve from the local Hugging Face cache only.
Prefixed references (``zoo:ja``) belong to plugins (:mod:`evovlm.plugins`), which register a
resolver for their prefix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from evovlm.errors import EvoVLMError

_PREFIXES: dict[str, Callable[[str], Path]] = {}  # "zoo:" -> resolver of the name after it
_PREFIXED = re.compile(r"^[a-z][a-z0-9_-]*:(?![/\\])")  # "zoo:ja", not "C:\\" nor "http://"


def register_prefix(prefix: str, resolver: Callable[[str], Path]) -> None:
    """References ``PREFIX:NAME`` resolve to ``resolver(NAME)`` (a plugin's models)."""
    if not _PREFIXED.match(prefix) or not prefix.endswith(":"):
        raise ValueError(f"a model prefix is lowercase letters ending in ':', got {prefix!r}")
    _PREFIXES[prefix] = resolver


def known_prefixes() -> tuple[str, ...]:
    """The registered ``PREFIX:`` of plugin models (``zoo:`` once the zoo plugin is loaded)."""
    return tuple(_PREFIXES)


def prefixed(ref: str) -> bool:
    """Whether ``ref`` is a ``PREFIX:NAME`` reference (of a plugin), not a path or a repo id."""
    return bool(_PREFIXED.match(ref))


def _is_repo_id(ref: str) -> bool:
    """HF repo ids are ``owner/name``: one slash, no leading ``.``, ``/`` or ``~``."""
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~")) and not prefixed(ref) and " " not in ref


def hub_id(ref: str | os.PathLike) -> str | None:
    """The Hugging Face repo id ``ref`` names, or None for a local directory or ``PREFIX:NAME``.

    A directory inside the HF cache (``.../models--owner--name/snapshots/REV``) names its repo.
    """
    ref_str = str(ref)
    if _is_repo_id(ref_str) and not Path(ref_str).expanduser().exists():
        return ref_str
    parts = Path(ref_str).parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/", 1)
    return None


def resolve_model_path(ref: str | os.PathLike) -> Path:
    """Return the local directory holding model ``ref``.

    ``ref`` is a directory, ``PREFIX:NAME`` (a plugin's model, e.g. ``zoo:ja`` from the miniature
    zoo) or an HF repo id such as ``augmxnt/shisa-gamma-7b-v1`` looked up in the local HF cache
    (``local_files_only``; the hub is never contacted).
    """
    ref_str = str(ref)
    if not ref_str.strip():
        raise EvoVLMError("empty model reference: give a directory, PREFIX:NAME or an HF repo id")
    if prefixed(ref_str) and not Path(ref_str).expanduser().exists():
        prefix, name = ref_str.split(":", 1)[0] + ":", ref_str.split(":", 1)[1]
        if prefix not in _PREFIXES:
            from evovlm.plugins import load_plugins

            load_plugins()
        if prefix not in _PREFIXES:
            known = ", ".join(sorted(_PREFIXES)) or "none installed"
            raise EvoVLMError(f"model reference {ref_str!r}: no plugin provides {prefix} models (known: {known})")
        return _PREFIXES[prefix](name)
    path = Path(ref_str).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise EvoVLMError(f"model reference {ref_str!r} is a file, not a model directory")
    if not _is_repo_id(ref_str):
        raise EvoVLMError(f"model directory {ref_str!r} does not exist")
    return _from_hf_cache(ref_str)


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ...
        raise EvoVLMError(
            f"{repo_id!r} is neither a local directory nor in the local Hugging Face cache ({HF_HUB_CACHE}). "
            "EvoVLM reads models from disk only: fetch it first on a machine with network access "
            f"(`hf download {repo_id}`) or pass a local directory. ({type(exc).__name__})"
        ) from None
