"""Helpers shared by several test files: tiny models built in memory, fabricated results files,
run directories and data files, and a fake Hugging Face cache.

A module of its own (pyproject's pytest ``pythonpath`` puts tests/ on sys.path), so that no test
file imports another and the suite runs under any ``--import-mode``.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "examples" / "tiny"


# -- fabricated inputs (shared with test_app_e2e.py) -------------------------------------------------

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb's shape) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def make_results(folder: Path) -> tuple[Path, Path]:
    """Two VQA results files (schema of evovlm.eval.evaluate) over the same 4 samples with images."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    samples = [("赤いりんご", "赤いりんごです", "りんご"), ("青い空", "空は青い", "海です"),
               ("白い犬", "犬がいます", "白い犬がいます"), ("黄色い花", "花", "花")]
    for i, colour in enumerate(["red", "blue", "white", "yellow"]):
        Image.new("RGB", (48, 32), colour).save(folder / f"img{i}.png")

    def write(name: str, model: str, which: int, scores: list[float]) -> Path:
        records = []
        for i, ((ref, resp_a, resp_b), score) in enumerate(zip(samples, scores)):
            records.append({
                "index": i, "id": f"q{i}", "question": f"画像{i}には何がありますか？", "reference": ref,
                "response": (resp_a, resp_b)[which], "image": str(folder / f"img{i}.png"), "is_ja": True,
                "extracted": None, "correct": None, "correct_ja": None, "rouge1": score, "rouge2": score / 2,
                "rougeL": score, "rougeL_ja": score, "ref_is_ja": True,
            })
        mean = sum(scores) / len(scores)
        results = {
            "schema_version": 1, "model": model, "bench": "ja-vg-vqa-500", "kind": "vqa", "metric": "rouge-ja",
            "split": "test", "data_seed": None, "data_source": "fabricated", "config": {"num_beams": 5},
            "summary": {"n": 4, "rougeL": mean, "rougeL_ja": mean}, "timing": {}, "samples": records,
            "created": "2024-01-01T00:00:00+00:00", "evovlm_version": "0.1.0",
        }
        path = folder / name
        path.write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")
        return path

    return (write("evovlm.json", "zoo:evovlm", 0, [80.0, 60.0, 20.0, 50.0]),
            write("llava.json", "zoo:vlm", 1, [30.0, 10.0, 70.0, 50.0]))


BEST_RECIPE = {  # as evolve writes one (Recipe.to_dict) for group_size 1 on the 2-layer tiny models
    "method": "dare_ties", "base_model": str(TINY / "base"), "seed": 0,
    "models": [{"model": str(TINY / "ja"), "weight": {"layers.0": 0.75, "layers.1": 0.25, "default": 0.5},
                "density": 0.6},  # pinned in the config: no gene
               {"model": str(TINY / "math"), "weight": 0.4,
                "density": {"layers.0": 0.8, "layers.1": 0.7, "default": 1.0}}]}
BEST_DFS = {"path": ["A:0", "B:1", "B:0", "A:1"], "scales": [1.0, 0.8, 1.2, 0.9]}


def make_run_dir(folder: Path, *, dfs: bool = False) -> Path:
    """A live run in evolve's format (evovlm.evolve.rundir), written with evolve's own writers.

    PS: 4 generations of 5 candidates (fitness 0.2 + 0.05 g + 0.01 i), generation 3's last one
    failed, a validation score per generation, a torn last line. ``dfs``: a ps+dfs run whose PS
    stage (the above, finished) is followed by a DFS stage under way: 2 generations of 4, plus
    the starting model (model A itself) in generation 0."""
    from evovlm.evolve.config import config_from_dict
    from evovlm.evolve.history import History
    from evovlm.evolve.report import best_file_text
    from evovlm.evolve.rundir import BEST_FILE, CONFIG_NAME, RUN_INFO_NAME, run_info_text
    from evovlm.evolve.search import Best

    folder.mkdir(parents=True, exist_ok=True)
    ps = {"method": "dare_ties", "base_model": str(TINY / "base"), "group_size": 1,
          "models": [{"model": str(TINY / "ja"), "density": 0.6}, {"model": str(TINY / "math"), "weight": 0.4}]}
    config = {"mode": "ps+dfs" if dfs else "ps", "seed": 0, "ps": ps, "optimizer": {"population": 5},
              "fitness": {"benchmark": "mgsm-ja", "metric": "acc_ja"}, "validation": {"benchmark": "mgsm-ja"}}
    if dfs:
        config["dfs"] = {"model_a": "ps", "model_b": str(TINY / "math"), "optimizer": {"population": 4}}
    (folder / CONFIG_NAME).write_text(config_from_dict(config).to_yaml(), encoding="utf-8")
    (folder / RUN_INFO_NAME).write_text(run_info_text(), encoding="utf-8")

    def candidate(generation: int, index: int, fitness: float | None, described: dict, **extra) -> dict:
        return {"type": "candidate", "generation": generation, "index": index, "fitness": fitness,
                "metric": "acc_ja", "error": None if fitness is not None else "RuntimeError: CUDA out of memory",
                "wall_s": 1.5, "merge_s": 0.5, "eval_s": 1.0, "worker": "host:1", "genome": [0.5, 0.25, 0.75],
                "candidate": described, "score": {"n": 8, "acc_ja": fitness}, **extra}

    def stage(name: str, records: list[dict], best: Best) -> Path:
        where = folder / name if dfs else folder
        history = History(where / "history.jsonl")
        for record in records:
            history.append(record)
        history.close()
        described = BEST_RECIPE if name == "ps" else BEST_DFS
        (where / BEST_FILE[name]).write_text(best_file_text(name, best, described, "acc_ja"), encoding="utf-8")
        return where

    records = []
    for generation in range(4):
        for index in range(5):
            failed = generation == 3 and index == 4
            records.append(candidate(generation, index, None if failed else 0.2 + 0.05 * generation + 0.01 * index,
                                     BEST_RECIPE))
        records.append({"type": "validation", "generation": generation, "index": 4 if generation < 3 else 3,
                        "fitness": 0.3 + 0.01 * generation, "metric": "acc_ja", "error": None})
        records.append({"type": "generation", "generation": generation, "population": 5, "wall_s": 7.5})
    ps_dir = stage("ps", records, Best(3, 3, [0.5, 0.25, 0.75], 0.38, 0.33))
    if dfs:  # the PS stage finished: its result and model are there
        (ps_dir / "result.json").write_text(json.dumps({"stage": "ps", "population": 5, "generations": 4}))
        (ps_dir / "model").mkdir()
        (ps_dir / "model" / "config.json").write_text("{}")
        records = [candidate(0, 4, 0.25, {"path": ["A:0", "A:1"], "scales": [1.0, 1.0]}, start=True)]
        for generation in range(2):
            for index in range(4):
                records.append(candidate(generation, index, 0.3 + 0.1 * generation - 0.02 * index, BEST_DFS))
        live = stage("dfs", records, Best(1, 0, [0.5, 0.25, 0.75], 0.4))
    else:
        live = ps_dir
    with (live / "history.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"type": "candidate", "generation": 4, "fitn')  # a live run's half-written line
    return folder


# -- tiny models in memory -----------------------------------------------------------------

CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 .,:?!#\n[]/<>") + [chr(c) for c in range(0x3041, 0x3041 + 80)]


def tiny_tokenizer(*, with_pad: bool = True, image_token: bool = False):
    """Character-level fast tokenizer that prepends BOS, like Llama/Mistral tokenizers."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<image>": 4}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    extra = {"extra_special_tokens": {"image_token": "<image>"}} if image_token else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>" if with_pad else None, **extra,
    )


def tiny_mistral_config(vocab_size: int):
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        initializer_range=0.1,  # livelier logits than 0.02: fewer near-ties between candidates
    )


def tiny_causal_lm(seed: int = 0):
    from transformers import MistralForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    return MistralForCausalLM(tiny_mistral_config(len(tokenizer))).eval(), tokenizer


def tiny_llava(seed: int = 0):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_tokenizer(image_token=True)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                              image_size=32, patch_size=8)
    config = LlavaConfig(text_config=tiny_mistral_config(len(tokenizer)), vision_config=vision, image_token_index=4,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", image_token="<image>",
                               num_additional_image_tokens=1)
    return model, processor


def random_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(CHARS[:40]) for _ in range(rng.randint(1, 48))) for _ in range(n)]


def random_images(n: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (int(rng.integers(16, 64)), int(rng.integers(16, 64)), 3),
                                         dtype=np.uint8)) for _ in range(n)]


# -- data files and a fake HF cache ------------------------------------------------------------

def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{q}\t{a}\n" for q, a in rows), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_png(path: Path, color=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), color).save(path)
    return path


def fake_hf_repo(cache: Path, repo_id: str, files: dict[str, str], kind: str = "datasets") -> Path:
    """Lay out a snapshot the way huggingface_hub caches it (refs/main -> snapshots/<sha>).

    ``kind`` is ``datasets`` or ``models``; ``files`` maps relative paths to text.
    """
    repo_dir = cache / f"{kind}--{repo_id.replace('/', '--')}"
    sha = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(sha)
    snapshot = repo_dir / "snapshots" / sha
    for rel, text in files.items():
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).write_text(text, encoding="utf-8")
    return snapshot


# -- a synthetic objective that stops a run at a known point -------------------------------------------

SPHERE_TARGET = [0.2, 0.8, 0.35, 0.65, 0.7, 0.25]
BLOCK_ENV = "EVOVLM_TEST_BLOCK"  # "N:FILE": the call after the N-th writes FILE, then hangs until killed
_calls = 0


def sphere_blocking(genes) -> float:
    """-sum((genes - SPHERE_TARGET)^2) over the genes there are, as the built-in sphere; with
    $EVOVLM_TEST_BLOCK set, a process that has scored N candidates writes FILE and hangs in the next
    one, so a test can kill -9 it mid-generation without racing the clock."""
    import os
    import time

    import numpy as np

    global _calls
    block = os.environ.get(BLOCK_ENV)
    if block:
        count, _, marker = block.partition(":")
        if _calls == int(count):
            Path(marker).write_text("blocked\n", encoding="utf-8")
            while True:
                time.sleep(60)
    _calls += 1
    genes = np.asarray(genes, dtype=float)
    return -float(np.sum((genes - np.asarray(SPHERE_TARGET[:genes.size])) ** 2))


DIE_ENV = "EVOVLM_TEST_DIE"  # "N:FILE": the process scoring its N-th candidate dies (once: FILE marks it done)


def die_if_due(calls: int) -> None:
    """With $EVOVLM_TEST_DIE = "N:FILE": at its N-th call (``calls`` made before), the first process writes
    FILE and kills itself, as a crashed worker would; once, since FILE marks it done."""
    import os

    die = os.environ.get(DIE_ENV)
    if die:
        count, _, marker = die.partition(":")
        if calls == int(count) and not Path(marker).exists():
            Path(marker).write_text(f"{os.getpid()}\n", encoding="utf-8")
            os._exit(1)


def sphere_dying(genes) -> float:
    """sphere_blocking's objective; with $EVOVLM_TEST_DIE set, the first process to reach its N-th call
    writes FILE and kills itself mid-candidate (as a crashed GPU worker would), once per run."""
    die_if_due(_calls)
    return sphere_blocking(genes)


# -- the demo app in a subprocess -------------------------------------------------------------------------

@contextmanager
def running_app(root: Path, *args: str) -> Iterator[str]:
    """``python app.py ARGS`` on a free port of 127.0.0.1, offline; yields its URL, stops it after.
    The server's output goes to ``root/server.log``."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import pytest

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = root / "server.log"
    # The port through Gradio's variable (--port works the same); no host given: 127.0.0.1.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "GRADIO_SERVER_PORT": str(port)}
    env.pop("GRADIO_SERVER_NAME", None)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        started, url = time.monotonic(), None
        while time.monotonic() - started < 90 and url is None:
            if proc.poll() is not None:
                pytest.fail(f"app exited with {proc.returncode}:\n{log.read_text()}")
            for line in log.read_text().splitlines():
                if line.startswith("Running on local URL:"):
                    url = line.split()[-1]
            time.sleep(0.2)
        if url is None:
            pytest.fail(f"app did not start:\n{log.read_text()}")
        print(f"app started in {time.monotonic() - started:.1f} s at {url}")
        assert url.startswith(f"http://127.0.0.1:{port}")  # binds the loopback address by default
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
