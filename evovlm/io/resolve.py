"""Turn a model reference (local path, ``zoo:NAME`` or an HF repo id) into a local directory.

Nothing here touches the network: repo ids resolve from the local Hugging Face cache only.
"""

from __future__ import annotations

import os
from pathlib import Path

from evovlm.errors import EvoVLMError

ZOO_PREFIX = "zoo:"
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo" / "models"


def _is_repo_id(ref: str) -> bool:
    """HF repo ids are ``owner/name``: one slash, no leading ``.``, ``/`` or ``~``."""
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~", ZOO_PREFIX)) and " " not in ref


def hub_id(ref: str | os.PathLike) -> str | None:
    """The Hugging Face repo id ``ref`` names, or None for a local directory or ``zoo:NAME``.

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

    ``ref`` is a directory, ``zoo:NAME`` (the embedded miniature zoo) or an HF repo id
    such as ``augmxnt/shisa-gamma-7b-v1`` looked up in the local HF cache
    (``local_files_only``; the hub is never contacted).
    """
    ref_str = str(ref)
    if not ref_str.strip():
        raise EvoVLMError("empty model reference: give a directory, zoo:NAME or an HF repo id")
    if ref_str.startswith(ZOO_PREFIX):
        name = ref_str[len(ZOO_PREFIX):]
        path = ZOO_DIR / name
        if not (path / "config.json").is_file():
            available = sorted(p.name for p in ZOO_DIR.iterdir() if (p / "config.json").is_file()) if ZOO_DIR.is_dir() else []
            raise EvoVLMError(
                f"zoo model {name!r} not found under {ZOO_DIR}; available: {', '.join(available) or 'none'} "
                "(build the zoo with `evovlm zoo build`)"
            )
        return path
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
