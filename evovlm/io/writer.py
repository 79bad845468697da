"""Atomic writing of sharded safetensors checkpoints.

Everything goes into a hidden temporary directory beside the destination, which is
renamed into place only when the whole checkpoint is complete. A failure (an exception,
Ctrl-C) removes the temporary directory, so no half-written model is ever left behind.

Shards are serialised in the caller's thread and written to disk by a background thread
(file writes release the GIL, safetensors' own ``save_file`` does not), so writing one
shard overlaps with merging the next. At most one shard is in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from evovlm.errors import EvoVLMError

_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}


def parse_size(text: str | int) -> int:
    """'2GB' -> 2_000_000_000 (HF's convention: decimal units)."""
    if isinstance(text, int):
        return text
    cleaned = str(text).strip().upper()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if cleaned.endswith(unit):
            number = cleaned[: -len(unit)].strip()
            try:
                return int(float(number) * _UNITS[unit])
            except ValueError:
                break
    try:
        return int(cleaned)
    except ValueError:
        raise EvoVLMError(f"cannot read size {text!r}: use e.g. 500MB or 2GB") from None


class ShardedCheckpointWriter:
    """Collects tensors into shards of at most ``max_shard_bytes`` and commits atomically.

    Use as a context manager; call :meth:`commit` at the end of the ``with`` body.
    """

    def __init__(self, out_dir: str | Path, *, max_shard_bytes: int = 10**9, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).expanduser().resolve()
        self.max_shard_bytes = max_shard_bytes
        if self.out_dir.exists() and not overwrite:
            if not self.out_dir.is_dir() or any(self.out_dir.iterdir()):
                raise EvoVLMError(f"output {self.out_dir} already exists and is not empty; "
                                  "choose another --out or pass --overwrite")
        self.overwrite = overwrite
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []  # tensor names per written shard
        self._total_bytes = 0
        self.tmp_dir: Path | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._in_flight: Future | None = None

    def __enter__(self) -> "ShardedCheckpointWriter":
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._io.shutdown(wait=True)  # never delete files a write is still using
        if self.tmp_dir is not None and self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    # -- tensors -----------------------------------------------------------------
    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size

    def _flush(self) -> None:
        from safetensors.torch import save

        assert self.tmp_dir is not None, "use the writer as a context manager"
        index = len(self._shards)
        payload = save(self._pending, metadata={"format": "pt"})
        self._wait_for_write()
        self._in_flight = self._io.submit((self.tmp_dir / f"shard-{index:05d}.tmp").write_bytes, payload)
        self._shards.append(list(self._pending))
        self._total_bytes += self._pending_bytes
        self._pending, self._pending_bytes = {}, 0

    def _wait_for_write(self) -> None:
        if self._in_flight is not None:
            self._in_flight.result()  # re-raises a failed write (e.g. disk full)
            self._in_flight = None

    # -- other files ---------------------------------------------------------------
    def write_text(self, name: str, text: str) -> None:
        assert self.tmp_dir is not None
        (self.tmp_dir / name).write_text(text, encoding="utf-8")

    def write_json(self, name: str, data: object) -> None:
        self.write_text(name, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def copy_file(self, source: Path, name: str | None = None) -> None:
        assert self.tmp_dir is not None
        shutil.copyfile(source, self.tmp_dir / (name or source.name))

    # -- finish --------------------------------------------------------------------
    def commit(self) -> Path:
        """Name the shards, write the index, and move the checkpoint into place."""
        assert self.tmp_dir is not None
        if self._pending or not self._shards:
            self._flush()
        self._wait_for_write()
        count = len(self._shards)
        weight_map: dict[str, str] = {}
        for index, names in enumerate(self._shards):
            final = "model.safetensors" if count == 1 else f"model-{index + 1:05d}-of-{count:05d}.safetensors"
            os.replace(self.tmp_dir / f"shard-{index:05d}.tmp", self.tmp_dir / final)
            weight_map.update(dict.fromkeys(names, final))
        if count > 1:
            self.write_json("model.safetensors.index.json",
                            {"metadata": {"total_size": self._total_bytes}, "weight_map": weight_map})
        if self.out_dir.exists():  # only reachable with overwrite=True
            backup = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            os.replace(self.out_dir, backup)
            os.replace(self.tmp_dir, self.out_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(self.tmp_dir, self.out_dir)
        self.tmp_dir = None
        return self.out_dir
