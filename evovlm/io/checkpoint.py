"""Lazy, tensor-by-tensor reading of HF checkpoints.

Safetensors files are memory-mapped and read one tensor at a time. Pickle checkpoints
(``*.bin``, ``*.pt``) can run code when loaded, so they are refused unless the caller
opts in, and even then they load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from evovlm.errors import EvoVLMError, option
from evovlm.io.resolve import resolve_model_path

SAFE_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"


def pickle_weights(path: Path) -> list[str]:
    """The pickle weight files of a model folder (not training_args.bin, optimizer.pt and the like)."""
    return sorted(p.name for p in path.iterdir()
                  if p.name.startswith(("pytorch_model", "model")) and p.suffix in (".bin", ".pt", ".pth"))


def check_weights_format(ref: str, path: Path, allow_pickle: bool | None) -> bool:
    """True when ``path`` holds safetensors weights; False when only pickles and ``allow_pickle``.

    Pickle files can run code when loaded, so only-pickle folders are refused unless the caller
    opts in (``allow_pickle`` True; None: this front end offers no opt-in), and even then they load
    with ``weights_only=True``.
    """
    if any(path.glob("*.safetensors")):
        return True
    pickles = pickle_weights(path)
    if not pickles:
        raise EvoVLMError(f"{ref}: no *.safetensors weights in {path}")
    if not allow_pickle:
        hint = "" if allow_pickle is None else (f", or pass {option('allow_pickle')} to load them with "
                                                "torch.load(weights_only=True)")
        raise EvoVLMError(f"{ref}: only pickle weights ({', '.join(pickles[:3])}) in {path}. Pickle files can run "
                          f"arbitrary code; convert them to safetensors{hint}")
    return False



def read_model_config(path: str | Path, ref: str | None = None) -> dict:
    """The ``config.json`` of a model directory, or a clear error."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise EvoVLMError(f"{ref or path}: no config.json in {path}; not a Hugging Face model directory")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvoVLMError(f"{config_path}: not valid JSON ({exc})") from None


# safetensors' dtype names (the file format's, as get_dtype() returns them)
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class Checkpoint:
    """A model directory whose tensors are read on demand.

    ``ref`` is a directory, ``zoo:NAME`` or an HF repo id in the local cache.
    """

    def __init__(self, ref: str | Path, *, allow_pickle: bool | None = False) -> None:
        self.ref = str(ref)
        self.path = resolve_model_path(ref)
        self.config = self._read_config()
        self._files: dict[str, str] = {}  # tensor name -> file name
        self._handles: dict[str, object] = {}
        self._pickled: dict[str, dict[str, torch.Tensor]] = {}
        self.is_pickle = False
        self._index_weights(allow_pickle)

    # -- discovery ---------------------------------------------------------------
    def _read_config(self) -> dict:
        return read_model_config(self.path, self.ref)

    def _index_weights(self, allow_pickle: bool | None) -> None:
        safe_files = sorted(p.name for p in self.path.glob("*.safetensors"))
        if (self.path / SAFE_INDEX).is_file():
            self._files = self._read_index(self.path / SAFE_INDEX)
            for file_name in sorted(set(self._files.values())):  # every listed tensor is in its shard
                listed = {key for key, shard in self._files.items() if shard == file_name}
                missing = sorted(listed - set(self._open(file_name).keys()))
                if missing:
                    raise EvoVLMError(f"{self.ref}: {SAFE_INDEX} lists {missing[0]!r} in {file_name}, which does "
                                      f"not hold it" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        elif safe_files:
            for file_name in safe_files:
                for key in self._open(file_name).keys():
                    self._files[key] = file_name
        else:
            self._index_pickle(allow_pickle)
        if not self._files:
            raise EvoVLMError(f"{self.ref}: no tensors found in {self.path}")

    def _read_index(self, index_path: Path) -> dict[str, str]:
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise EvoVLMError(f"{index_path}: malformed index ({type(exc).__name__})") from None
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise EvoVLMError(f"{index_path}: malformed index (weight_map must map tensor names to file names)")
        for file_name in sorted(set(weight_map.values())):
            if Path(file_name).name != file_name or file_name in (".", ".."):  # no ../ out of the model folder
                raise EvoVLMError(f"{index_path}: shard name {file_name!r} is not a file in the model folder")
            if not (self.path / file_name).is_file():
                raise EvoVLMError(f"{self.ref}: shard {file_name} listed in {index_path.name} is missing")
        return dict(weight_map)

    def _index_pickle(self, allow_pickle: bool | None) -> None:
        check_weights_format(self.ref, self.path, allow_pickle)
        pickles = pickle_weights(self.path)
        self.is_pickle = True
        if (self.path / PICKLE_INDEX).is_file():
            self._files = self._read_index(self.path / PICKLE_INDEX)
        else:
            for file_name in pickles:
                for key in self._load_pickle(file_name):
                    self._files[key] = file_name

    def _open(self, file_name: str):
        handle = self._handles.get(file_name)
        if handle is None:
            from safetensors import safe_open

            try:
                handle = safe_open(str(self.path / file_name), framework="pt")
            except Exception as exc:  # SafetensorError, OSError
                raise EvoVLMError(f"{self.path / file_name}: cannot read safetensors file, corrupt or truncated? "
                                  f"({exc})") from None
            self._handles[file_name] = handle
        return handle

    def _load_pickle(self, file_name: str) -> dict[str, torch.Tensor]:
        if file_name not in self._pickled:
            # mmap needs the zip format (torch >= 1.6); older checkpoints are the legacy format.
            mmap = zipfile.is_zipfile(self.path / file_name)
            try:
                state = torch.load(self.path / file_name, map_location="cpu", weights_only=True, mmap=mmap)
            except Exception as exc:
                raise EvoVLMError(f"{self.path / file_name}: cannot load with weights_only=True ({exc})") from None
            if not isinstance(state, dict):
                raise EvoVLMError(f"{self.path / file_name}: expected a state dict, found {type(state).__name__}")
            self._pickled[file_name] = state
        return self._pickled[file_name]

    # -- access ------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._files)

    def _pickled_tensor(self, key: str) -> torch.Tensor:
        file_name = self._files[key]
        state = self._load_pickle(file_name)
        if key not in state or not isinstance(state[key], torch.Tensor):
            raise EvoVLMError(f"{self.ref}: {PICKLE_INDEX} lists {key!r} in {file_name}, which does not hold it")
        return state[key]

    def shape(self, key: str) -> tuple[int, ...]:
        file_name = self._files[key]
        if self.is_pickle:
            return tuple(self._pickled_tensor(key).shape)
        return tuple(self._open(file_name).get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        file_name = self._files[key]
        if self.is_pickle:
            return self._pickled_tensor(key).dtype
        name = self._open(file_name).get_slice(key).get_dtype()
        if name not in SAFETENSORS_DTYPES:
            raise EvoVLMError(f"{self.path / file_name}: tensor {key!r} has dtype {name}, which torch cannot hold")
        return SAFETENSORS_DTYPES[name]

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor (a private copy, safe to modify)."""
        if key not in self._files:
            raise EvoVLMError(f"{self.ref}: tensor {key!r} not found")
        file_name = self._files[key]
        if self.is_pickle:
            return self._pickled_tensor(key).clone()
        try:
            return self._open(file_name).get_tensor(key)
        except Exception as exc:
            raise EvoVLMError(f"{self.path / file_name}: cannot read tensor {key!r}, corrupt file? ({exc})") from None

    def __repr__(self) -> str:
        return f"Checkpoint({self.ref!r}, {len(self._files)} tensors)"

