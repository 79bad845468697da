"""The demo's model list and settings: the shipped ``models.yaml`` or an override, plus availability.

Availability is checked without loading anything (and without importing torch), so the app starts
in seconds even when a listed model is a 7B checkpoint or does not exist yet.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import ConfigDict, Field, Strict, field_validator, model_validator

from evovlm.arch import is_vlm_config
from evovlm.errors import EvoVLMError
from evovlm.io.resolve import hub_id, prefixed
from evovlm.io.yamlfile import read_yaml_file
from evovlm.schema import Count, Number, Section, parse

SHIPPED_MODELS = Path(__file__).with_name("models.yaml")
ENV_MODELS = "EVOVLM_APP_MODELS"
KINDS = ("vlm", "llm")
TASKS = ("vqa", "chat")


class _Frozen(Section):
    model_config = ConfigDict(frozen=True)


class Limits(_Frozen):
    max_new_tokens: Count = 1024
    max_beams: Count = 8
    max_question_chars: Count = 2000
    max_turns: Count = 8
    max_prompt_chars: Count = 8000    # the whole chat prompt: older turns are dropped to fit
    max_prompt_tokens: Count = 4096   # and in tokens (also at most the model's context less the new tokens)
    max_image_side: Count = 2048
    max_image_pixels: Count = 50_000_000


class GenDefaults(_Frozen):
    template: str = "plain"
    num_beams: Count = 1
    repetition_penalty: Annotated[Number, Field(gt=0)] = 1.0
    max_new_tokens: Count = 512


DEFAULT_GENERATION = {
    "vqa": GenDefaults(template="ja-shisa-vqa", num_beams=5, repetition_penalty=1.5, max_new_tokens=512),
    "chat": GenDefaults(template="auto", num_beams=1, repetition_penalty=1.0, max_new_tokens=512),
}


class ModelEntry(_Frozen):
    name: str = ""     # label in the UI, unique (default: the ref)
    ref: str           # local dir, zoo:NAME or HF repo id
    kind: Literal["vlm", "llm"] = "llm"  # as listed; the checkpoint's config wins once resolvable
    role: str = ""     # shown with the name on its column: "evolved merge", "source: VLM", ...
    description: str = ""
    template: Optional[str] = None  # this model's own prompt template, used when the UI says "model default"
    # This model's own generation settings: the settings panel takes them when it is picked as model A
    # (the tab's defaults otherwise). max_new_tokens is also a cap (zoo models answer in a few dozen tokens).
    max_new_tokens: Optional[Count] = None
    num_beams: Optional[Count] = None
    repetition_penalty: Optional[Annotated[Number, Field(gt=0)]] = None
    single_turn: Annotated[bool, Strict()] = False  # trained on single Q/A prompts: chat sends no history
    stop_after: list[str] = Field(default_factory=list)  # the answer ends with the first of these (kept)

    def label(self) -> str:
        return f"{self.name} · {self.role}" if self.role else self.name

    def decoding(self, defaults: GenDefaults) -> GenDefaults:
        """The settings panel's values when this model is model A."""
        own = {key: getattr(self, key) for key in ("num_beams", "repetition_penalty", "max_new_tokens")}
        return defaults.model_copy(update={key: value for key, value in own.items() if value is not None})

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, item: Any) -> Any:
        if isinstance(item, str):
            item = {"ref": item}
        if isinstance(item, dict) and not item.get("ref"):
            raise ValueError("needs a 'ref' (directory, zoo:NAME or HF repo id)")
        if isinstance(item, dict) and not item.get("name"):
            item = {**item, "name": str(item["ref"])}
        return item


class CacheSettings(Section):
    max_resident: Count = 2


class ResultsPair(Section):
    """Two ``evovlm eval`` results files compared in the case-study tab (B optional)."""

    label: str
    a: str
    b: Optional[str] = None


class Showcase(Section):
    """What a first-time visitor sees: an introduction, bundled results and runs (paths relative to the YAML)."""

    intro: str = ""              # markdown above the tabs
    results: list[ResultsPair] = Field(default_factory=list)  # the first is shown on load
    headline: list[str] = Field(default_factory=list)  # results files whose scores make the header table
    runs: Optional[str] = None   # a folder of `evovlm evolve` runs listed with --runs-dir's


class ExampleSource(Section):
    """Examples drawn from a registered benchmark: the first ``count`` questions of ``split``, with references."""

    benchmark: str
    split: Optional[str] = None
    count: Count = 5


class ModelsFile(Section):
    """The models YAML as written: ``models``, and optional ``defaults``, ``generation``, ``limits``, ``cache``."""

    models: list[ModelEntry] = Field(min_length=1)
    defaults: dict[Literal["vqa", "chat"], list[str]] = Field(default_factory=dict)
    generation: dict[Literal["vqa", "chat"], GenDefaults] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    showcase: Showcase = Field(default_factory=Showcase)
    examples: dict[Literal["vqa", "chat"], ExampleSource] = Field(default_factory=dict)

    @field_validator("generation", mode="before")
    @classmethod
    def _over_defaults(cls, generation: Any) -> Any:
        """A task's keys override the shipped defaults; keys left out keep them."""
        if not isinstance(generation, dict):
            return generation
        return {task: {**DEFAULT_GENERATION[task].model_dump(), **values} if task in DEFAULT_GENERATION
                and isinstance(values, dict) else values for task, values in generation.items()}

    @field_validator("models")
    @classmethod
    def _unique(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate model name {duplicates[0]!r}")
        return models


@dataclass
class Availability:
    ok: bool
    path: Path | None = None
    kind: str | None = None
    reason: str = ""
    downloadable: bool = False  # not local, but may be fetched on first use (--download)


@dataclass
class AppConfig:
    models: list[ModelEntry]
    defaults: dict[str, list[str]]
    generation: dict[str, GenDefaults]
    limits: Limits
    max_resident: int = 2
    source: str = ""
    showcase: Showcase = field(default_factory=Showcase)
    examples: dict[str, ExampleSource] = field(default_factory=dict)

    def entry(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)

    def label(self, name: str | None) -> str:
        entry = self.entry(name or "")
        return entry.label() if entry else (name or "")

    def decoding(self, task: str, name: str | None) -> GenDefaults:
        entry = self.entry(name or "")
        return entry.decoding(self.generation[task]) if entry else self.generation[task]


def _resolve_ref(ref: str, base_dir: Path) -> str:
    """Relative local paths are relative to the YAML file; zoo names and repo ids pass through."""
    if prefixed(ref) or Path(ref).is_absolute() or ref.startswith("~"):
        return ref
    candidate = base_dir / ref
    return str(candidate.resolve()) if candidate.exists() or ref.startswith(".") else ref


def load_config(path: str | os.PathLike | None = None) -> AppConfig:
    """Read the models YAML: ``path``, else ``$EVOVLM_APP_MODELS``, else the shipped file."""
    path = Path(path or os.environ.get(ENV_MODELS) or SHIPPED_MODELS).expanduser()
    data = read_yaml_file(path, "models file") or {}
    if not isinstance(data, dict):
        raise EvoVLMError(f"{path}: expected a mapping with a 'models' list")
    parsed = parse(ModelsFile, data, str(path))
    models = [m.model_copy(update={"ref": _resolve_ref(m.ref, path.parent)}) for m in parsed.models]
    return AppConfig(models=models, defaults=dict(parsed.defaults),
                     generation={**DEFAULT_GENERATION, **parsed.generation}, limits=parsed.limits,
                     max_resident=parsed.cache.max_resident, source=str(path),
                     showcase=_showcase_paths(parsed.showcase, path.parent), examples=dict(parsed.examples))


def _showcase_paths(showcase: Showcase, base_dir: Path) -> Showcase:
    """The showcase's file references as absolute paths (relative ones are relative to the YAML)."""
    def absolute(ref: str | None) -> str | None:
        return None if ref is None else str((base_dir / Path(ref).expanduser()).resolve())

    pairs = [pair.model_copy(update={"a": absolute(pair.a), "b": absolute(pair.b)}) for pair in showcase.results]
    return showcase.model_copy(update={"results": pairs, "headline": [absolute(ref) for ref in showcase.headline],
                                       "runs": absolute(showcase.runs)})


def _checkpoint_kind(path: Path) -> str | None:
    """vlm / llm from config.json (read as JSON: no torch import at start-up)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return "vlm" if is_vlm_config(config) else "llm"


def check_model(entry: ModelEntry, *, allow_download: bool = False) -> Availability:
    """Can ``entry`` be loaded? Never raises and never touches the network."""
    from evovlm.io.resolve import resolve_model_path

    try:
        path = resolve_model_path(entry.ref)
    except EvoVLMError as exc:
        reason = str(exc)
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        if hub_id(entry.ref):
            if allow_download and not offline:
                return Availability(ok=True, kind=entry.kind, reason="not cached: downloaded on first use",
                                    downloadable=True)
            reason += (" The demo fetches it on first use only when started with --download (or "
                       "EVOVLM_APP_DOWNLOAD=1) and HF_HUB_OFFLINE unset." if not allow_download else
                       " --download is on, but HF_HUB_OFFLINE is set: unset it to fetch models.")
        return Availability(ok=False, reason=reason)
    except Exception as exc:  # a broken cache entry must not stop the app
        return Availability(ok=False, reason=f"{type(exc).__name__}: {exc}")
    kind = _checkpoint_kind(path)
    if kind is None:
        return Availability(ok=False, path=path, reason=f"{path} has no readable config.json")
    return Availability(ok=True, path=path, kind=kind)


_PATH = re.compile(r"(?:~|/)[^\s'\"(),;]*/([^\s'\"(),;/]+)")


def public_reason(reason: str) -> str:
    """``reason`` without server paths (``/root/.cache/huggingface/hub/models--x`` -> ``…/models--x``): a
    public Space's visitor learns why a model is unavailable, not how the server is laid out."""
    return _PATH.sub(r"…/\1", reason)


def short_reason(reason: str) -> str:
    """A few words for a dropdown label; the Models tab shows the full reason."""
    lowered = reason.lower()
    if "zoo model" in lowered:
        return "zoo model not built yet"
    if "hugging face cache" in lowered:
        return "not in the local HF cache"
    if "does not exist" in lowered:
        return "directory missing"
    return reason.split(";")[0][:60]


class Registry:
    """The model list with cached availability, re-checked on demand (models can appear later)."""

    def __init__(self, config: AppConfig, *, allow_download: bool = False):
        self.config = config
        self.allow_download = allow_download
        self._lock = threading.Lock()
        self._status: dict[str, Availability] = {}
        self.refresh()

    def refresh(self) -> None:
        status = {m.name: check_model(m, allow_download=self.allow_download) for m in self.config.models}
        with self._lock:
            self._status = status

    def status(self, name: str, *, recheck: bool = False) -> Availability:
        entry = self.config.entry(name)
        if entry is None:
            return Availability(ok=False, reason=f"unknown model {name!r}: not in {self.config.source}")
        with self._lock:
            current = self._status.get(name)
        if current is None or (recheck and not current.ok):
            current = check_model(entry, allow_download=self.allow_download)
            with self._lock:
                self._status[name] = current
        return current

    def kind(self, name: str) -> str:
        entry = self.config.entry(name)
        return self.status(name).kind or (entry.kind if entry else "llm")

    def names(self, task: str) -> list[str]:
        """Models offered for a task: VLMs for image QA; LLMs first, then VLMs (text only) for chat."""
        vlms = [m.name for m in self.config.models if self.kind(m.name) == "vlm"]
        llms = [m.name for m in self.config.models if self.kind(m.name) == "llm"]
        return vlms if task == "vqa" else llms + vlms

    def choices(self, task: str) -> list[tuple[str, str]]:
        """(label, value) pairs; unavailable models stay listed, labelled with a short reason."""
        out = []
        for name in self.names(task):
            status = self.status(name)
            label = name if status.ok else f"{name} (unavailable: {short_reason(status.reason)})"
            out.append((label, name))
        return out

    def default_pair(self, task: str) -> tuple[str | None, str | None]:
        """The YAML's defaults when available, else the first available models (distinct if possible)."""
        names = self.names(task)
        available = [n for n in names if self.status(n).ok]
        wanted = [n for n in self.config.defaults.get(task, []) if n in names]
        chosen: list[str] = []
        for slot in range(2):
            preferred = wanted[slot] if slot < len(wanted) else None
            if preferred and self.status(preferred).ok and preferred not in chosen:
                chosen.append(preferred)
                continue
            spare = [n for n in available if n not in chosen] or available
            fallback = spare[0] if spare else (preferred or (names[slot] if slot < len(names) else None))
            chosen.append(fallback)
        return chosen[0], chosen[1]

    def table(self) -> list[list[str]]:
        rows = []
        for m in self.config.models:
            status = self.status(m.name)
            state = "available" if status.ok and not status.downloadable else (
                "download on first use" if status.ok else "unavailable")
            detail = str(status.path) if status.path else status.reason
            rows.append([m.name, status.kind or m.kind, m.ref, state, detail, m.description])
        return rows
