"""Lazily loaded models with bounded memory: at most N resident, least recently used evicted first.

A model in use (a generation is running on it) is never evicted; the cache may then hold more than
N for a moment and shrinks back when the generation ends. Each resident model carries a lock: one
generation at a time per model, because fast tokenizers are not safe to call from two threads at
once ("Already borrowed") and two beam searches on one GPU model would only compete for memory.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evovlm.errors import EvoVLMError


@dataclass
class Slot:
    runner: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class ModelCache:
    def __init__(self, loader: Callable[[str], Any], max_resident: int = 2):
        if max_resident < 1:
            raise EvoVLMError(f"the model cache needs room for at least one model, got {max_resident}")
        self._loader = loader
        self.max_resident = max_resident
        self._slots: OrderedDict[str, Slot] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._slots

    @contextmanager
    def use(self, name: str) -> Iterator[Slot]:
        """The loaded model ``name`` (loading it if needed), pinned while the block runs."""
        slot = self._acquire(name)
        try:
            yield slot
        finally:
            with self._lock:
                slot.users -= 1
                evicted = self._evict_locked(self.max_resident)
            _free(evicted)

    def _take(self, name: str) -> Slot | None:
        slot = self._slots.get(name)
        if slot is not None:
            self._slots.move_to_end(name)
            slot.users += 1
        return slot

    def _acquire(self, name: str) -> Slot:
        with self._lock:
            slot = self._take(name)
            if slot is not None:
                return slot
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        with load_lock:  # one load per model, however many requests ask for it at once
            with self._lock:
                slot = self._take(name)
                if slot is not None:
                    return slot
                evicted = self._evict_locked(self.max_resident - 1)  # make room before the load
            _free(evicted)
            runner = self._loader(name)  # slow: outside the cache lock
            with self._lock:
                slot = Slot(runner, users=1)
                self._slots[name] = slot
                evicted = self._evict_locked(self.max_resident)
            _free(evicted)
            return slot

    def _evict_locked(self, keep: int) -> list[Slot]:
        evicted = []
        for name in list(self._slots):
            if len(self._slots) <= keep:
                break
            if self._slots[name].users == 0:
                evicted.append(self._slots.pop(name))
        return evicted


def _free(evicted: list[Slot]) -> None:
    """Drop the evicted models and give their memory back (GPU memory too)."""
    if not evicted:
        return
    evicted.clear()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# Files a model needs; skips pickles (never loaded) and the original consolidated checkpoints.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


_import_lock = threading.Lock()
_imported = False


def warm_imports() -> None:
    """Import what generation needs, once, under a lock.

    transformers resolves its names lazily; two threads touching it for the first time at once (the
    two columns) can see "module 'transformers' has no attribute 'AutoProcessor'". The app also calls
    this in a background thread at start-up, so the first request does not pay for the import.
    """
    global _imported
    with _import_lock:
        if _imported:
            return
        import transformers
        from transformers.generation.streamers import BaseStreamer  # noqa: F401

        for name in ("AutoTokenizer", "AutoProcessor", "AutoModelForCausalLM", "AutoModelForImageTextToText",
                     "GenerationConfig", "LogitsProcessorList", "StoppingCriteria", "StoppingCriteriaList"):
            getattr(transformers, name)
        import evovlm.eval.runners  # noqa: F401

        _imported = True


def runner_loader(registry: Any, *, device: str | None = None, dtype: str | None = None) -> Callable[[str], Any]:
    """A loader for :class:`ModelCache`: registry name -> evovlm runner (VLM or causal LM)."""

    def load(name: str) -> Any:
        warm_imports()
        status = registry.status(name, recheck=True)
        if not status.ok:
            raise EvoVLMError(f"{name} is unavailable: {status.reason}")
        path: Path | None = status.path
        if path is None:  # listed as downloadable: fetch now (only with --download)
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(registry.config.entry(name).ref, allow_patterns=_DOWNLOAD_PATTERNS))
            registry.refresh()
        from evovlm.eval.runners import load_runner

        return load_runner(path, device=device, dtype=dtype)

    return load
