"""Benchmark registry and loaders: MGSM-JA, JA-VG-VQA-500, JA-VLM-Bench-In-the-Wild.

A loader is any callable ``loader(*, split, data_seed, path, limit) -> Benchmark``; other
modules (the synthetic zoo) add theirs with :func:`register_benchmark`. Nothing here touches
the network: data comes from a file the user names, a few conventional local places, or the
local Hugging Face cache.

Local formats
  * math: TSV ``question<TAB>answer`` without header (url-nlp's mgsm_ja.tsv), or JSONL with
    ``question`` and ``answer`` (or HF's ``answer_number``).
  * vqa: JSONL with ``image`` (a path, relative to the JSONL file) and ``question``/``answer``
    or ``qas`` (a list of {question, answer}; the first is scored, as in the paper); a directory
    holding ``<split>.jsonl``; or HF parquet files (needs pyarrow).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evovlm.errors import EvoVLMError, option
from evovlm.eval import prompts
from evovlm.eval.runners import GenerationSettings
from evovlm.plugins import load_plugins

KIND_METRIC = {"math": "mgsm", "vqa": "rouge-ja", "qa": "rouge-ja"}  # qa: text questions, free-form answers
_REPO_ROOT = Path(__file__).resolve().parents[2]

MGSM_DEFAULTS = GenerationSettings(
    template="ja-alpaca-cot", max_new_tokens=1024, stop_strings=prompts.ALPACA_STOP_STRINGS, batch_size=8
)
# The paper's EvoVLM-JP evaluation config: beam search 5, repetition penalty 1.5, 512 new tokens.
VQA_DEFAULTS = GenerationSettings(
    template="ja-shisa-vqa", max_new_tokens=512, num_beams=5, repetition_penalty=1.5, batch_size=4
)


@dataclass
class Sample:
    """One question. ``image`` is a PIL image or a path; ``image_ref`` is what results record.

    ``content`` (optional, VQA): ``{"accepted": [...], "wrong": [...]}`` values for content scoring.
    """

    id: str
    question: str
    reference: str
    image: Any = None
    image_ref: str | None = None
    content: dict | None = None


@dataclass
class Benchmark:
    name: str
    kind: str  # "math" (scored with mgsm), "vqa" (images, rouge-ja) or "qa" (text, rouge-ja)
    samples: list[Sample]
    generation: GenerationSettings
    split: str | None = None
    data_seed: int | None = None
    source: str = ""  # where the data came from, for the results file

    def __post_init__(self) -> None:
        if self.kind not in KIND_METRIC:
            raise ValueError(f"benchmark kind must be one of {sorted(KIND_METRIC)}, got {self.kind!r}")

    @property
    def metric(self) -> str:
        return KIND_METRIC[self.kind]

    @property
    def template(self) -> str:
        return self.generation.template

    def __len__(self) -> int:
        return len(self.samples)

    def head(self, limit: int | None) -> Benchmark:
        """The first ``limit`` samples (all when ``None``)."""
        return self if limit is None else replace(self, samples=self.samples[:limit])


BenchmarkLoader = Callable[..., Benchmark]
_REGISTRY: dict[str, tuple[BenchmarkLoader, str]] = {}


def register_benchmark(name: str, loader: BenchmarkLoader, *, description: str = "", overwrite: bool = False) -> None:
    """Register ``loader(*, split, data_seed, path, limit) -> Benchmark`` under ``name``.

    Loaders receive every argument (``None`` when unset) and may honour ``limit`` themselves
    (e.g. to draw fewer synthetic samples); :func:`load_benchmark` truncates anyway.
    """
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"benchmark {name!r} is already registered")
    _REGISTRY[key] = (loader, description)


# Results files record an image by ``Sample.image_ref``: a path, or a reference a generated benchmark
# can draw again (the zoo's "zoo-scene:..."). Such benchmarks register how, by the reference's prefix.
_IMAGE_REFS: dict[str, Callable[[str], Any]] = {}


def register_image_ref(prefix: str, draw: Callable[[str], Any]) -> None:
    """``draw(ref) -> PIL image`` for image references that start with ``prefix``."""
    _IMAGE_REFS[prefix] = draw


def image_from_ref(ref: str) -> Any | None:
    """The image a registered generator draws for ``ref`` (None when no generator knows it, or it fails)."""
    for prefix, draw in _IMAGE_REFS.items():
        if ref.startswith(prefix):
            try:
                return draw(ref)
            except (ValueError, KeyError):  # a damaged or foreign reference
                return None
    return None


def list_benchmarks() -> list[str]:
    load_plugins()  # plugins add theirs (the miniature zoo's zoo-* benchmarks)
    return sorted(_REGISTRY)


def describe_benchmarks() -> dict[str, str]:
    return {name: _REGISTRY[name][1] for name in list_benchmarks()}


def load_benchmark(
    name: str,
    *,
    split: str | None = None,
    data_seed: int | None = None,
    path: str | os.PathLike | None = None,
    limit: int | None = None,
) -> Benchmark:
    """Load benchmark ``name``; ``path`` overrides where its data is read from."""
    key = name.lower()
    if key not in _REGISTRY:
        load_plugins()
    if key not in _REGISTRY:
        raise EvoVLMError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(list_benchmarks())}")
    if limit is not None and limit < 1:
        raise EvoVLMError(f"{option('limit')} must be a positive number of samples, got {limit}")
    loader = _REGISTRY[key][0]
    bench = loader(split=split, data_seed=data_seed, path=None if path is None else str(path), limit=limit)
    if not bench.samples:
        raise EvoVLMError(f"benchmark {name!r} loaded from {bench.source or 'its source'} has no samples")
    return bench.head(limit)


# --- shared helpers -------------------------------------------------------------


def _fixed_dataset_checks(name: str, data_seed: int | None) -> None:
    if data_seed is not None:
        raise EvoVLMError(f"{name} is a fixed dataset: {option('data_seed')} only applies to synthetic benchmarks")


def _hf_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of dataset ``repo_id``, or None (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # not cached / offline / invalid id: all mean "not here"
        return None


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 data file; an unreadable or non-UTF-8 file is a clear error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EvoVLMError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise EvoVLMError(f"{path}:{line}: not UTF-8 text; save the data file as UTF-8") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for line_no, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvoVLMError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise EvoVLMError(f"{path}:{line_no}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise EvoVLMError(f"{path}:{line_no}: expected a JSON object per line")
        yield line_no, row


def _read_parquet_rows(path: Path, needed: list[list[str]]) -> list[dict]:
    """Rows of a parquet file; ``needed`` lists alternatives, e.g. [["image"], ["qas", "question"]]."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise EvoVLMError(
            f"reading {path} needs pyarrow, which is not installed: `pip install pyarrow`, "
            f"or convert the data to JSONL (+ image files) and pass it with {option('data')}"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise EvoVLMError(f"cannot read parquet file {path}: {exc}") from None
    columns = set(parquet.schema_arrow.names)
    for options in needed:
        if not columns.intersection(options):
            raise EvoVLMError(
                f"{path} has no column {' or '.join(repr(c) for c in options)} (columns: {', '.join(sorted(columns))})"
            )
    return parquet.read().to_pylist()


def _require(row: dict, column: str, where: str) -> Any:
    if row.get(column) is None:
        raise EvoVLMError(f"{where}: missing column {column!r}")
    return row[column]


def _single_split(name: str, path: Path, split: str | None) -> str:
    if split not in (None, "test"):
        raise EvoVLMError(f"{name}: {path} holds a single split (test); "
                          f"{option('split')} {split} cannot be served from it")
    return "test"


# --- MGSM-JA ----------------------------------------------------------------------

MGSM_REPO = "juletxara/mgsm"
MGSM_ENV = "EVOVLM_MGSM_JA"


def read_math_file(path: str | os.PathLike) -> list[Sample]:
    """Questions and numeric answers from a TSV (``question<TAB>answer``) or JSONL file."""
    from evovlm.eval.numparse import parse_number

    path = Path(path)
    if path.is_dir():
        raise EvoVLMError(f"{path} is a directory: give the TSV or JSONL file itself")
    if not path.is_file():
        raise EvoVLMError(f"data file {path} does not exist")
    samples: list[Sample] = []
    if path.suffix == ".tsv":
        for line_no, line in enumerate(_text_lines(path), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise EvoVLMError(f"{path}:{line_no}: expected `question<TAB>answer`, found {len(parts)} field(s)")
            samples.append(Sample(id=str(len(samples)), question=parts[0].strip(), reference=parts[1].strip()))
            _check_answer(samples[-1].reference, f"{path}:{line_no}", parse_number)
    elif path.suffix in (".jsonl", ".json"):
        for line_no, row in _iter_jsonl(path):
            where = f"{path}:{line_no}"
            question = _require(row, "question", where)
            answer = row.get("answer_number")  # HF mgsm: "answer" holds a worked solution (or nothing)
            answer = _require(row, "answer", where) if answer is None else answer
            answer = str(answer).strip()
            _check_answer(answer, where, parse_number)
            samples.append(Sample(id=str(row.get("id", len(samples))), question=str(question), reference=answer))
    elif path.suffix == ".parquet":
        for index, row in enumerate(_read_parquet_rows(path, [["question"], ["answer_number", "answer"]])):
            answer = row.get("answer_number") if row.get("answer_number") is not None else row.get("answer")
            _check_answer(str(answer), f"{path} row {index}", parse_number)
            samples.append(Sample(id=str(index), question=str(row["question"]), reference=str(answer).strip()))
    else:
        raise EvoVLMError(f"{path}: unsupported file type {path.suffix!r}; use .tsv or .jsonl")
    return samples


def _check_answer(answer: str, where: str, parse_number: Callable[[str], float | None]) -> None:
    if parse_number(str(answer)) is None:
        raise EvoVLMError(f"{where}: answer {answer!r} is not a number")


def mgsm_search_paths() -> list[Path]:
    """Local places tried, in order, when no --data is given (the HF cache comes after).

    ``eval_data/mgsm_ja.tsv`` ships with the repository (MGSM is CC BY 4.0), so a clone
    anywhere finds it; ``$EVOVLM_MGSM_JA`` overrides it.
    """
    env = os.environ.get(MGSM_ENV)
    return ([Path(env).expanduser()] if env else []) + [_REPO_ROOT / "eval_data" / "mgsm_ja.tsv"]


def _mgsm_from_hf(split: str) -> Path | None:
    snapshot = _hf_snapshot(MGSM_REPO)
    if snapshot is None:
        return None
    if split == "test" and (hits := sorted(snapshot.rglob("mgsm_ja.tsv"))):
        return hits[0]
    for suffix in (".parquet", ".jsonl", ".tsv"):
        for candidate in sorted(snapshot.rglob(f"*{suffix}")):
            rel = candidate.relative_to(snapshot).as_posix().lower()
            if ("/ja/" in f"/{rel}" or "_ja" in rel or "-ja" in rel) and split in rel:
                return candidate
    return None


def load_mgsm_ja(*, split: str | None = None, data_seed: int | None = None, path: str | None = None,
                 limit: int | None = None) -> Benchmark:
    _fixed_dataset_checks("mgsm-ja", data_seed)
    if path is not None:
        split = _single_split("mgsm-ja", Path(path), split)
        source = Path(path)
    else:
        split = split or "test"
        env = os.environ.get(MGSM_ENV)
        if env and not Path(env).expanduser().is_file():
            raise EvoVLMError(f"${MGSM_ENV} points to {env}, which is not a file")
        local = [p for p in mgsm_search_paths() if p.is_file()] if split == "test" else []
        found = local[0] if local else _mgsm_from_hf(split)
        if found is None:
            tried = ([] if env else [f"${MGSM_ENV} (unset)"]) + [str(p) for p in mgsm_search_paths()]
            raise EvoVLMError(
                f"MGSM-JA ({split}) data not found. Looked in: {'; '.join(tried)}; and the local Hugging Face "
                f"cache ({_hf_cache_dir()}) for dataset {MGSM_REPO} (config ja). Provide it with {option('data')} FILE "
                f"(url-nlp's mgsm_ja.tsv: `question<TAB>answer`, or JSONL with question/answer), set ${MGSM_ENV}, "
                f"or put mgsm_ja.tsv in {_REPO_ROOT / 'eval_data'}."
            )
        source = found
    return Benchmark(name="mgsm-ja", kind="math", samples=read_math_file(source), generation=MGSM_DEFAULTS,
                     split=split, source=str(source))


# --- VQA --------------------------------------------------------------------------


def _vqa_sample(row: dict, index: int, where: str, *, image_base: Path | None, label: str) -> Sample:
    if row.get("qas") is not None:
        qas = row["qas"]
        if not isinstance(qas, list) or not qas or not isinstance(qas[0], dict):
            raise EvoVLMError(f"{where}: column 'qas' must be a non-empty list of {{question, answer}}")
        question, answer = (_require(qas[0], "question", f"{where} qas[0]"),
                            _require(qas[0], "answer", f"{where} qas[0]"))
    else:
        if row.get("question") is None:
            raise EvoVLMError(f"{where}: missing column 'question' (or 'qas')")
        question, answer = row["question"], _require(row, "answer", where)
    image = _require(row, "image", where)
    sample_id = str(next((row[k] for k in ("id", "question_id", "image_id") if row.get(k) is not None), index))
    if isinstance(image, dict) and image.get("bytes"):  # HF Image feature: {"bytes", "path"}
        from PIL import Image

        ref = f"{label}#{index}" + (f"/{image['path']}" if image.get("path") else "")
        data = image["bytes"]
        if not isinstance(data, (bytes, bytearray)):  # e.g. base64 text in a JSONL file
            raise EvoVLMError(f"{where}: image bytes must be binary data (a parquet binary column), not "
                              f"{type(data).__name__}; in JSONL give the image as a file path")
        try:
            return Sample(sample_id, str(question), str(answer), Image.open(io.BytesIO(data)), ref)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise EvoVLMError(f"{where}: its image bytes are not a readable image ({exc})") from None
    image_path = Path(image["path"] if isinstance(image, dict) else str(image)).expanduser()
    if not image_path.is_absolute() and image_base is not None:
        image_path = image_base / image_path
    if not image_path.is_file():
        raise EvoVLMError(f"{where}: image file {image_path} does not exist")
    return Sample(sample_id, str(question), str(answer), image_path, str(image_path))


def read_vqa_file(path: str | os.PathLike, *, label: str | None = None) -> list[Sample]:
    """VQA samples from a JSONL (+ image files) or a parquet file."""
    path = Path(path)
    if not path.is_file():
        raise EvoVLMError(f"data file {path} does not exist")
    if path.suffix in (".jsonl", ".json"):
        return [_vqa_sample(row, i, f"{path}:{line_no}", image_base=path.parent, label=label or str(path))
                for i, (line_no, row) in enumerate(_iter_jsonl(path))]
    if path.suffix == ".parquet":
        rows = _read_parquet_rows(path, [["image"], ["qas", "question"]])
        return [_vqa_sample(row, i, f"{path} row {i}", image_base=path.parent, label=label or str(path))
                for i, row in enumerate(rows)]
    raise EvoVLMError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl (+ images) or .parquet")


def _split_files(directory: Path, split: str) -> list[Path]:
    """Data files for ``split`` in a directory: ``<split>.jsonl`` or HF's ``<split>-*.parquet``."""
    jsonl = directory / f"{split}.jsonl"
    if jsonl.is_file():
        return [jsonl]
    parquet = sorted(directory.rglob(f"{split}-*.parquet")) or sorted(directory.rglob(f"{split}/*.parquet"))
    if parquet:
        return parquet
    lone_jsonl = sorted(directory.glob("*.jsonl"))
    return lone_jsonl if split == "test" and len(lone_jsonl) == 1 else []  # a lone file is the test set


def _vqa_loader(name: str, repo_id: str, env_var: str) -> BenchmarkLoader:
    def load(*, split: str | None = None, data_seed: int | None = None, path: str | None = None,
             limit: int | None = None) -> Benchmark:
        _fixed_dataset_checks(name, data_seed)
        split = split or "test"
        local_dir = _REPO_ROOT / "eval_data" / name
        env = os.environ.get(env_var)
        if path is not None or env:
            target = Path(path if path is not None else env).expanduser()
            if not target.exists():
                raise EvoVLMError(f"{name}: data path {target} does not exist")
        elif local_dir.is_dir():
            target = local_dir
        else:
            target = _hf_snapshot(repo_id)
            if target is None:
                raise EvoVLMError(
                    f"{name} data not found. Looked in: ${env_var} (unset); {local_dir}; and the local Hugging Face "
                    f"cache ({_hf_cache_dir()}) for dataset {repo_id}. "
                    f"Provide it with {option('data')} (a JSONL file with "
                    "image/question/answer and the image files, a directory with <split>.jsonl, or the dataset's "
                    f"parquet files), set ${env_var}, or download {repo_id} on a machine with network access "
                    f"(`hf download {repo_id} --repo-type dataset`)."
                )
        if target.is_file():
            split = _single_split(name, target, split)
            files = [target]
        else:
            files = _split_files(target, split)
            if not files:
                raise EvoVLMError(f"{name}: no data for split {split!r} in {target} "
                                  f"(expected {split}.jsonl or {split}-*.parquet)")
        from_hf = path is None and not env and target != local_dir
        # Image references name the HF dataset rather than a snapshot path that differs per machine.
        samples = [s for f in files for s in read_vqa_file(f, label=f"{repo_id}:{split}/{f.name}" if from_hf else None)]
        return Benchmark(name=name, kind="vqa", samples=samples, generation=VQA_DEFAULTS, split=split,
                         source=str(target))

    return load


register_benchmark("mgsm-ja", load_mgsm_ja, description="MGSM Japanese (250 grade-school maths problems), accuracy")
register_benchmark(
    "ja-vg-vqa-500", _vqa_loader("ja-vg-vqa-500", "SakanaAI/JA-VG-VQA-500", "EVOVLM_JA_VG_VQA"),
    description="Japanese Visual Genome VQA, 500 images (first QA each), ROUGE-L",
)
register_benchmark(
    "ja-vlm-bench-in-the-wild",
    _vqa_loader("ja-vlm-bench-in-the-wild", "SakanaAI/JA-VLM-Bench-In-the-Wild", "EVOVLM_JA_VLM_WILD"),
    description="JA-VLM-Bench-In-the-Wild (Japanese culture images), ROUGE-L",
)
