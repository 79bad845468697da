"""The streaming safetensors writer: files that safetensors itself reads back bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from evovlm.errors import EvoVLMError
from evovlm.io import writer as writer_module
from evovlm.io.writer import ShardedCheckpointWriter, TensorSpec


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "odd.bf16": torch.randn(3, 5, generator=generator).bfloat16(),  # 30 bytes: misaligns what follows
        "fp32": torch.randn(7, generator=generator),
        "int64": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float16),
        "empty": torch.zeros(0, 4),
        "fp64": torch.randn(2, 2, generator=generator, dtype=torch.float64),
        "uint8": torch.arange(3, dtype=torch.uint8),
    }


def _layout(tensors: dict[str, torch.Tensor]) -> list[TensorSpec]:
    return [TensorSpec(name, tuple(t.shape), t.dtype) for name, t in tensors.items()]


@pytest.mark.parametrize("max_shard_bytes", [10**9, 40])
@pytest.mark.parametrize("drop_every", [None, 16])  # 16: flush and drop the page cache after nearly every tensor
def test_written_files_read_back_bit_identical_with_safetensors(tmp_path, max_shard_bytes, drop_every, monkeypatch):
    if drop_every is not None:
        monkeypatch.setattr(writer_module, "_DROP_EVERY_BYTES", drop_every)
    tensors = _tensors()
    out = tmp_path / "out"
    with ShardedCheckpointWriter(out, _layout(tensors), max_shard_bytes=max_shard_bytes) as writer:
        for name in reversed(list(tensors)):  # any order: each tensor has its planned offset
            writer.add(name, tensors[name])
        writer.commit()
    files = sorted(out.glob("*.safetensors"))
    if max_shard_bytes == 40:
        assert len(files) > 1
        weight_map = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        assert sorted(weight_map) == sorted(tensors)
    else:
        assert [f.name for f in files] == ["model.safetensors"]
    read = {}
    for path in files:
        read.update(load_file(path))
        with safe_open(str(path), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
    assert sorted(read) == sorted(tensors)
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and read[name].shape == tensor.shape
        assert torch.equal(read[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name


def test_a_tensor_off_the_plan_is_refused_and_nothing_is_left(tmp_path):
    tensors = _tensors()
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="planned"):
        with ShardedCheckpointWriter(out, _layout(tensors)) as writer:
            writer.add("fp32", torch.zeros(8))
    with pytest.raises(ValueError, match="not in the writer's layout"):
        with ShardedCheckpointWriter(out, _layout(tensors)) as writer:
            writer.add("nobody", torch.zeros(1))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_commit_refuses_a_checkpoint_with_missing_tensors(tmp_path):
    tensors = _tensors()
    out = tmp_path / "out"
    with pytest.raises(EvoVLMError, match="incomplete"):
        with ShardedCheckpointWriter(out, _layout(tensors)) as writer:
            writer.add("fp32", tensors["fp32"])
            writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_a_failing_disk_gives_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    tensors = _tensors()
    with pytest.raises(EvoVLMError, match="No space left on device"):
        with ShardedCheckpointWriter(tmp_path / "out", _layout(tensors)) as writer:
            for name, tensor in tensors.items():
                writer.add(name, tensor)
            writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_destination_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EvoVLMError, match=f"cannot create the output folder .*: {blocker} is a file, not a folder"):
        with ShardedCheckpointWriter(blocker / "sub" / "out", _layout(_tensors())):
            pass
