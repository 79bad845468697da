"""Apply a recipe: disk to disk (streaming, atomic) or into a live ``nn.Module``.

The language-model tensors of the base and the sources are matched by canonical name
(see :mod:`evovlm.arch`), merged one tensor at a time, and written under the *target's*
own names; every other tensor of the target (a VLM's vision tower and projector) is
copied unchanged.

Vocabulary rule: ``embed_tokens`` and ``lm_head`` may differ in row count between models
(LLaVA-1.6-Mistral has 32064 rows, the Mistral LLMs 32000). The rows all participants
share (the minimum row count) are merged; the target's rows beyond that are kept as they
are. Any other shape difference is an error naming the tensor and both shapes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import torch

from evovlm.arch import (
    KeyLayout,
    architecture_of,
    check_supported,
    detect_layout,
    is_vocab_tensor,
    layer_group,
    text_config,
)
from evovlm.dtypes import torch_dtype
from evovlm.errors import EvoVLMError
from evovlm.io.checkpoint import Checkpoint
from evovlm.merge.methods import get_method
from evovlm.merge.recipe import Recipe, layer_span
from evovlm.merge.sparsify import DareDraws, tensor_seed
from evovlm.progress import progress_bar

if TYPE_CHECKING:
    from evovlm.io.writer import TensorSpec

# Files copied from the target so the output loads with its tokenizer/processor.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.json", "chat_template.jinja",
                   "preprocessor_config.json", "processor_config.json", "generation_config.json")
# The recipe as run: every merge output holds it, so --overwrite knows an output from other folders.
RECIPE_FILE = "evovlm_recipe.yaml"


def parse_dtype(name: str | None) -> torch.dtype | None:
    return None if name is None else torch_dtype(name)


def merge_tensor(recipe: Recipe, canonical: str, base: torch.Tensor | None, sources: Sequence[torch.Tensor],
                 target: torch.Tensor | None = None, out: torch.Tensor | None = None,
                 dare_draws: DrawStore | None = None) -> torch.Tensor:
    """Merge one canonical tensor, of the target's shape (or the sources').

    The result is fp32, or is written into ``out`` (a float tensor of that shape, e.g. a
    live model's bf16 parameter), which saves a full-size fp32 copy per tensor. DARE's draws
    come from ``dare_draws`` when given (held across candidates), else are drawn afresh.
    """
    method = get_method(recipe.method)
    group = layer_group(canonical)
    weights = [recipe.value(i, "weight", group) for i in range(len(sources))]
    densities = [recipe.value(i, "density", group) for i in range(len(sources))]
    participants = list(sources) + ([base] if base is not None else [])
    everyone = participants + ([target] if target is not None else [])
    rows = min(t.shape[0] for t in everyone)
    shared_rows = is_vocab_tensor(canonical) and any(t.shape[0] != rows for t in everyone)
    seeds = [tensor_seed(recipe.seed, canonical, i) for i in range(len(sources))] if method.random else None
    if seeds is not None and dare_draws is not None:
        numel = sources[0][:rows].numel() if shared_rows else sources[0].numel()
        seeds = [dare_draws.get(seed, numel, sources[0].device) for seed in seeds]
    if shared_rows:  # merge the shared vocabulary rows; the target keeps its extra rows
        merged_rows = method.fn(None if base is None else base[:rows], [s[:rows] for s in sources], weights,
                                densities, seeds=seeds, **recipe.method_options())
        if target is None:
            return merged_rows if out is None else out.copy_(merged_rows)
        result = target.float().clone() if out is None else out.copy_(target)
        result[:rows] = merged_rows
        return result
    return method.fn(base, list(sources), weights, densities, seeds=seeds, out=out, **recipe.method_options())


@dataclass
class _Opened:
    checkpoint: Checkpoint
    layout: KeyLayout
    canonical: dict[str, str]  # canonical name -> native name

    @property
    def ref(self) -> str:
        return self.checkpoint.ref


def _open(ref: str, allow_pickle: bool | None, role: str) -> _Opened:
    checkpoint = Checkpoint(ref, allow_pickle=allow_pickle)
    check_supported(checkpoint.config, f"{role} {ref}")
    layout = detect_layout(checkpoint.keys(), architecture_of(checkpoint.config), where=f"{role} {ref}")
    canonical = {}
    for key in checkpoint.keys():
        name = layout.to_canonical(key)
        if name is not None and not name.endswith("rotary_emb.inv_freq"):
            canonical[name] = key
    return _Opened(checkpoint, layout, canonical)


class MergeJob:
    """Opened and validated checkpoints of one recipe, ready to stream tensors."""

    def __init__(self, recipe: Recipe, *, allow_pickle: bool | None = False) -> None:
        self.recipe = recipe
        self.target = _open(recipe.target_ref(), allow_pickle, "target")
        self.base = _open(recipe.base_model, allow_pickle, "base_model") if recipe.base_model else None
        self.sources = [_open(spec.model, allow_pickle, f"models[{i}]") for i, spec in enumerate(recipe.models)]
        self._validate()

    def participants(self) -> list[_Opened]:
        return ([self.base] if self.base else []) + self.sources

    def _validate(self) -> None:
        target_text = text_config(self.target.checkpoint.config)
        self._check_layer_selectors(target_text.get("num_hidden_layers"))
        for other in self.participants():
            other_text = text_config(other.checkpoint.config)
            for field_name, label in (("num_hidden_layers", "decoder layers"), ("hidden_size", "hidden size")):
                mine, theirs = target_text.get(field_name), other_text.get(field_name)
                if mine is not None and theirs is not None and mine != theirs:
                    raise EvoVLMError(f"architecture mismatch: {other.ref} has {theirs} {label}, "
                                      f"target {self.target.ref} has {mine}")
        for other in self.participants():
            missing = sorted(set(other.canonical) - set(self.target.canonical))
            if missing:
                raise EvoVLMError(f"tensor {missing[0]} of {other.ref} is missing from target {self.target.ref}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        for canonical, native in self.target.canonical.items():
            target_shape = self.target.checkpoint.shape(native)
            for other in self.participants():
                if canonical not in other.canonical:
                    raise EvoVLMError(f"tensor {canonical} (target name {native}) is missing from {other.ref}")
                shape = other.checkpoint.shape(other.canonical[canonical])
                rows_only = is_vocab_tensor(canonical) and shape[1:] == target_shape[1:]
                if shape != target_shape and not rows_only:
                    raise EvoVLMError(f"architecture mismatch at {canonical}: {other.ref} has shape {tuple(shape)}, "
                                      f"target {self.target.ref} has {tuple(target_shape)}")

    def _check_layer_selectors(self, layers: int | None) -> None:
        """``layers.99`` on a 6-layer model would be ignored without a word: a typo, or a recipe for another model."""
        if not layers:
            return
        for index, spec in enumerate(self.recipe.models):
            for parameter in ("weight", "density"):
                value = getattr(spec, parameter)
                for key in value if isinstance(value, dict) else ():
                    span = layer_span(key)
                    if span is not None and span[1] >= layers:  # _param puts first <= last
                        raise EvoVLMError(f"models[{index}].{parameter}: {key} names a layer that {self.target.ref} "
                                          f"lacks: it has {layers} decoder layers, layers.0-{layers - 1}")

    def output_layout(self, out_dtype: torch.dtype | None = None) -> list[TensorSpec]:
        """Name, shape and dtype of every tensor :meth:`merged_tensors` will yield, in order."""
        from evovlm.io.writer import TensorSpec

        checkpoint = self.target.checkpoint
        layout = []
        for native in checkpoint.keys():
            dtype = checkpoint.dtype(native)
            if out_dtype is not None and dtype.is_floating_point:
                dtype = out_dtype
            layout.append(TensorSpec(native, checkpoint.shape(native), dtype))
        return layout

    def merged_tensors(self, out_dtype: torch.dtype | None = None, workers: int = 1,
                       progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """(native name, tensor) for every tensor of the target, in the target's order."""
        keys = self.target.checkpoint.keys()
        to_canonical = {native: canonical for canonical, native in self.target.canonical.items()}

        def produce(native: str) -> torch.Tensor:
            canonical = to_canonical.get(native)
            target_tensor = self.target.checkpoint.get(native)
            if not target_tensor.is_floating_point():
                return target_tensor  # integer buffers: unchanged
            if canonical is None:  # vision tower, projector: unchanged but for an explicit dtype
                return target_tensor.to(out_dtype) if out_dtype is not None else target_tensor
            base = self.base.checkpoint.get(self.base.canonical[canonical]) if self.base else None
            sources = [s.checkpoint.get(s.canonical[canonical]) for s in self.sources]
            merged = torch.empty(target_tensor.shape, dtype=out_dtype or target_tensor.dtype)
            return merge_tensor(self.recipe, canonical, base, sources, target_tensor, out=merged)

        bar = progress_bar(total=len(keys), desc="merging", unit="tensor", disable=not progress)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, _threads_per_worker(workers):
            # map() keeps the order; at most `workers` tensors are in flight at once.
            window = max(1, workers)
            for start in range(0, len(keys), window):
                batch = keys[start:start + window]
                for native, tensor in zip(batch, pool.map(produce, batch)):
                    bar.update(1)
                    yield native, tensor
        bar.close()


@contextmanager
def _threads_per_worker(workers: int) -> Iterator[None]:
    """Share the cores among the workers: each tensor's ops run on its worker's thread alone.

    torch's intra-op pool is global; left at its default, every worker's ops would each use
    every core, and the oversubscribed threads slow each other down.
    """
    before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(max(1, before // workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def merge_checkpoints(recipe: Recipe, out_dir: str | Path, *, allow_pickle: bool = False, overwrite: bool = False,
                      max_shard_bytes: int = 10**9, workers: int = 1, progress: bool = True) -> Path:
    """Merge per ``recipe`` into a new HF checkpoint at ``out_dir``; nothing is left there on failure."""
    from evovlm.io.writer import ShardedCheckpointWriter
    from evovlm.merge.card import model_card

    job = MergeJob(recipe, allow_pickle=allow_pickle)
    out_dtype = parse_dtype(recipe.dtype)
    with ShardedCheckpointWriter(out_dir, job.output_layout(out_dtype), max_shard_bytes=max_shard_bytes,
                                 overwrite=overwrite, owner_marker=RECIPE_FILE) as writer:
        for native, tensor in job.merged_tensors(out_dtype, workers=workers, progress=progress):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise EvoVLMError(f"the merge produced non-finite values (inf or NaN) in {native}; nothing was "
                                  "written. Check the sources for damaged weights and the recipe's numbers")
            writer.add(native, tensor)
        config = dict(job.target.checkpoint.config)
        if out_dtype is not None:
            dtype_name = str(out_dtype).removeprefix("torch.")
            config["dtype"] = dtype_name
            if "torch_dtype" in config:
                config["torch_dtype"] = dtype_name
        writer.write_json("config.json", config)
        for name in TOKENIZER_FILES:
            source = job.target.checkpoint.path / name
            if source.is_file():
                writer.copy_file(source)
        writer.write_text(RECIPE_FILE, recipe.to_yaml())  # as run, CLI overrides included
        writer.write_text("README.md", model_card(recipe, job.target.ref, job.target.checkpoint.config,
                                                  job.base.ref if job.base else None))
        return writer.commit()


class DrawStore:
    """DARE's draws per (tensor seed, numel), drawn once and held on the device of the merge.

    A 7B evolution's draws take 2 bytes per parameter and source, and drawing them on the CPU
    costs more than the whole merge on a GPU; they do not depend on the densities a candidate
    changes. On a GPU they are held while ``keep_free_bytes`` stay free there (room for the
    candidate's generation); past that, the rest are drawn afresh each time.
    """

    def __init__(self, keep_free_bytes: int = 8 << 30) -> None:
        self.held: dict[tuple[int, int], DareDraws] = {}
        self.keep_free_bytes = keep_free_bytes

    @property
    def nbytes(self) -> int:
        return sum(draws.nbytes for draws in self.held.values())

    def get(self, seed: int, numel: int, device: torch.device) -> DareDraws:
        held = self.held.get((seed, numel))
        if held is not None and held.shifted.device == device:
            return held
        draws = DareDraws.generate(numel, seed)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if draws.nbytes + self.keep_free_bytes > free:
                return draws
        draws = draws.to(device)
        self.held[(seed, numel)] = draws
        return draws


class ResidentSources:
    """Base and source language-model tensors held in memory under canonical names.

    An evolution loads them once; each candidate is then merged straight into a live
    module with :func:`merge_into_module`, without touching disk.
    """

    def __init__(self, base: Mapping[str, torch.Tensor] | None, sources: Sequence[Mapping[str, torch.Tensor]],
                 *, dare_draws: DrawStore | None = None) -> None:
        self.base = base
        self.sources = list(sources)
        self.dare_draws = dare_draws  # None: DARE draws afresh for every merge (what a CPU run does)

    @classmethod
    def load(cls, recipe: Recipe, *, allow_pickle: bool | None = None,
             device: torch.device | str | None = None) -> "ResidentSources":
        """``allow_pickle`` as for :class:`~evovlm.io.checkpoint.Checkpoint`; None: refused, with no opt-in
        offered (an evolution reads safetensors only). ``device``: where the tensors are held (default CPU);
        a re-merge then runs there."""
        job = MergeJob(recipe, allow_pickle=allow_pickle)

        def read(opened: _Opened) -> dict[str, torch.Tensor]:
            return {canonical: opened.checkpoint.get(native).to(device or "cpu")
                    for canonical, native in opened.canonical.items() if canonical in job.target.canonical}

        return cls(read(job.base) if job.base else None, [read(source) for source in job.sources])

    @property
    def nbytes(self) -> int:
        tensors = [t for part in ([self.base] if self.base else []) + self.sources for t in part.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> "ResidentSources":
        def move(part: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {name: tensor.to(device) for name, tensor in part.items()}
        return ResidentSources(None if self.base is None else move(self.base), [move(s) for s in self.sources])

    def pinned(self, *, release: bool = False) -> "ResidentSources":
        """A copy in page-locked CPU memory, which a GPU reads at full bus speed (and asynchronously).
        ``release``: each original is dropped from this object once copied, so the peak is one tensor
        more than the sources, not twice them."""
        def pin(part: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            held = {}
            for name in list(part):
                held[name] = _pinned_copy(part[name])
                if release and isinstance(part, dict):
                    del part[name]
            return held
        return ResidentSources(None if self.base is None else pin(self.base), [pin(s) for s in self.sources])

    def placed_for(self, device: torch.device, *, spare_bytes: int = 2 << 30) -> "ResidentSources":
        """Moved to the live model's GPU when they fit there with ``spare_bytes`` left; else held in pinned
        CPU memory (this object's tensors are released as they are copied). Either way a re-merge runs on
        the GPU, into the model (:func:`merge_into_module` streams pinned sources over one tensor at a
        time), and DARE's draws are held there (:class:`DrawStore`)."""
        if device.type != "cuda":
            return self
        free, _ = torch.cuda.mem_get_info(device)
        placed = self.to(device) if self.nbytes + spare_bytes <= free else self.pinned(release=True)
        placed.dare_draws = DrawStore()
        return placed


def _pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    try:
        copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    except RuntimeError:  # page-locking refused (e.g. a memlock limit): plain memory streams too, slower
        return tensor.cpu()
    return copy.copy_(tensor)


@torch.no_grad()
def merge_into_module(module: torch.nn.Module, recipe: Recipe, resident: ResidentSources,
                      *, progress: bool = False) -> int:
    """Overwrite the language-model parameters of ``module`` with the merge; returns tensors written.

    ``module`` is e.g. the target VLM or causal LM, already loaded; tensors outside its
    language tower are left untouched. The recipe's model list must match ``resident``.
    """
    if len(recipe.models) != len(resident.sources):
        raise EvoVLMError(f"recipe has {len(recipe.models)} models but {len(resident.sources)} are resident")
    state = module.state_dict(keep_vars=True)
    layout = detect_layout(state.keys(), where="module")
    written = 0
    for native, parameter in progress_bar(state.items(), desc="re-merging", disable=not progress):
        canonical = layout.to_canonical(native)
        if canonical is None or canonical not in resident.sources[0] or not parameter.is_floating_point():
            continue
        base = resident.base[canonical] if resident.base is not None else None
        sources = [source[canonical] for source in resident.sources]
        if parameter.device != sources[0].device and parameter.device.type != "cpu":
            # sources in (pinned) CPU memory, the model on a GPU: each tensor is streamed over and merged there
            base = None if base is None else base.to(parameter.device, non_blocking=True)
            sources = [source.to(parameter.device, non_blocking=True) for source in sources]
        inputs = sources + [base] if base is not None else sources
        draws = resident.dare_draws
        if parameter.device != sources[0].device:  # sources on a GPU, the model on the CPU: merged there, copied back
            parameter.data.copy_(merge_tensor(recipe, canonical, base, sources, parameter.data.to(sources[0].device),
                                              dare_draws=draws))
        elif parameter.data.is_contiguous() and not any(_shares_memory(parameter.data, t) for t in inputs):
            merge_tensor(recipe, canonical, base, sources, parameter.data, out=parameter.data, dare_draws=draws)
        else:  # the parameters are the resident tensors themselves
            parameter.data.copy_(merge_tensor(recipe, canonical, base, sources, parameter.data, dare_draws=draws))
        written += 1
    if written == 0:
        raise EvoVLMError("no language-model tensor of the module matched the resident sources")
    return written


def _shares_memory(one: torch.Tensor, other: torch.Tensor) -> bool:
    return one.untyped_storage().data_ptr() == other.untyped_storage().data_ptr()
