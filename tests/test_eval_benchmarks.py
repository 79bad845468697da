"""Benchmark registry and loaders: real MGSM file, local fixtures, search order, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evovlm.errors import EvoVLMError
from evovlm.eval import benchmarks
from evovlm.eval.benchmarks import Benchmark, Sample, list_benchmarks, load_benchmark, register_benchmark
from evovlm.eval.numparse import parse_number
from helpers import fake_hf_repo, write_jsonl, write_png, write_tsv

SHIPPED_MGSM = Path(__file__).resolve().parents[1] / "eval_data/mgsm_ja.tsv"


@pytest.fixture
def no_default_data(tmp_path, monkeypatch):
    """Hide every default data location: repo eval_data, env vars, HF cache."""
    monkeypatch.setattr(benchmarks, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("EVOVLM_MGSM_JA", "EVOVLM_JA_VG_VQA", "EVOVLM_JA_VLM_WILD"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_registry_lists_paper_benchmarks():
    assert {"mgsm-ja", "ja-vg-vqa-500", "ja-vlm-bench-in-the-wild"} <= set(list_benchmarks())
    with pytest.raises(EvoVLMError, match="known benchmarks: .*mgsm-ja"):
        load_benchmark("gsm8k-klingon")


def test_shipped_mgsm_file_is_found_without_data(monkeypatch):
    from evovlm.eval.langid import is_japanese

    monkeypatch.delenv("EVOVLM_MGSM_JA", raising=False)
    bench = load_benchmark("mgsm-ja")
    assert Path(bench.source) == SHIPPED_MGSM
    assert (bench.kind, bench.metric, bench.split, len(bench)) == ("math", "mgsm", "test", 250)
    assert all(parse_number(s.reference) is not None for s in bench.samples)
    assert sum(is_japanese(s.question) for s in bench.samples) >= 245
    assert bench.samples[0].reference == "18"
    gen = bench.generation
    assert (gen.template, gen.num_beams, gen.repetition_penalty) == ("ja-alpaca-cot", 1, 1.0)
    assert "Response" in gen.stop_strings
    assert len(load_benchmark("mgsm-ja", path=SHIPPED_MGSM, limit=5)) == 5


def test_mgsm_tsv_and_jsonl_fixtures(tmp_path):
    tsv = write_tsv(tmp_path / "m.tsv", [("りんごは3個あります。2個食べると？", "1"), ("合計は？", "1,250")])
    bench = load_benchmark("mgsm-ja", path=tsv)
    assert [s.reference for s in bench.samples] == ["1", "1,250"]
    assert bench.source == str(tsv)
    jsonl = write_jsonl(tmp_path / "m.jsonl", [
        {"question": "A?", "answer": "途中式...", "answer_number": 42},  # HF layout: answer_number wins
        {"question": "B?", "answer": 7, "id": "b"},
    ])
    samples = load_benchmark("mgsm-ja", path=jsonl).samples
    assert [(s.id, s.reference) for s in samples] == [("0", "42"), ("b", "7")]


def test_mgsm_bad_files(tmp_path):
    with pytest.raises(EvoVLMError, match="does not exist"):
        load_benchmark("mgsm-ja", path=tmp_path / "absent.tsv")
    (tmp_path / "m.tsv").write_text("q\t1\nno tab here\n", encoding="utf-8")
    with pytest.raises(EvoVLMError, match=r"m\.tsv:2: expected `question<TAB>answer`"):
        load_benchmark("mgsm-ja", path=tmp_path / "m.tsv")
    with pytest.raises(EvoVLMError, match="not a number"):
        load_benchmark("mgsm-ja", path=write_tsv(tmp_path / "n.tsv", [("q", "many")]))
    with pytest.raises(EvoVLMError, match="missing column 'question'"):
        load_benchmark("mgsm-ja", path=write_jsonl(tmp_path / "q.jsonl", [{"prompt": "x", "answer": 1}]))
    with pytest.raises(EvoVLMError, match="missing column 'answer'"):
        load_benchmark("mgsm-ja", path=write_jsonl(tmp_path / "a.jsonl", [{"question": "x"}]))
    with pytest.raises(EvoVLMError, match="single split"):
        load_benchmark("mgsm-ja", path=write_tsv(tmp_path / "s.tsv", [("q", "1")]), split="train")
    with pytest.raises(EvoVLMError, match="fixed dataset"):
        load_benchmark("mgsm-ja", path=tmp_path / "s.tsv", data_seed=3)
    with pytest.raises(EvoVLMError, match="--limit"):
        load_benchmark("mgsm-ja", path=tmp_path / "s.tsv", limit=0)


def test_mgsm_search_order(no_default_data, monkeypatch):
    tmp = no_default_data
    with pytest.raises(EvoVLMError) as info:
        load_benchmark("mgsm-ja")
    message = str(info.value)
    for place in ("$EVOVLM_MGSM_JA", "eval_data/mgsm_ja.tsv", "juletxara/mgsm", "--data"):
        assert place in message

    fake_hf_repo(tmp / "hf-cache", "juletxara/mgsm", {"mgsm_ja.tsv": "HF?\t1\n"})
    assert load_benchmark("mgsm-ja").samples[0].question == "HF?"
    (tmp / "repo/eval_data").mkdir(parents=True)
    write_tsv(tmp / "repo/eval_data/mgsm_ja.tsv", [("repo?", "3")])
    assert load_benchmark("mgsm-ja").samples[0].question == "repo?"
    monkeypatch.setenv("EVOVLM_MGSM_JA", str(write_tsv(tmp / "env.tsv", [("env?", "4")])))
    assert load_benchmark("mgsm-ja").samples[0].question == "env?"
    monkeypatch.setenv("EVOVLM_MGSM_JA", str(tmp / "gone.tsv"))
    with pytest.raises(EvoVLMError, match="EVOVLM_MGSM_JA"):
        load_benchmark("mgsm-ja")


def test_vqa_jsonl_with_images(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png", (0, 0, 255))
    data = write_jsonl(tmp_path / "vqa.jsonl", [
        {"image": "img/a.png", "image_id": 11,
         "qas": [{"question": "何色ですか？", "answer": "赤です。"}, {"question": "二問目", "answer": "無視"}]},
        {"image": str(tmp_path / "img" / "b.png"), "question": "何色？", "answer": "青"},
    ])
    bench = load_benchmark("ja-vg-vqa-500", path=data)
    assert (bench.kind, bench.metric, bench.split) == ("vqa", "rouge-ja", "test")
    first, second = bench.samples
    assert (first.id, first.question, first.reference) == ("11", "何色ですか？", "赤です。")  # first QA only
    assert first.image == tmp_path / "img" / "a.png" and first.image_ref == str(tmp_path / "img" / "a.png")
    assert (second.question, second.reference) == ("何色？", "青")
    gen = bench.generation
    assert (gen.template, gen.num_beams, gen.repetition_penalty, gen.max_new_tokens) == ("ja-shisa-vqa", 5, 1.5, 512)
    wild = load_benchmark("ja-vlm-bench-in-the-wild", path=data, limit=1)
    assert len(wild) == 1 and wild.name == "ja-vlm-bench-in-the-wild"


def test_vqa_directory_splits(tmp_path):
    write_png(tmp_path / "d" / "x.png")
    write_jsonl(tmp_path / "d" / "test.jsonl", [{"image": "x.png", "question": "t", "answer": "t"}])
    write_jsonl(tmp_path / "d" / "train.jsonl", [{"image": "x.png", "question": "tr", "answer": "tr"}] * 2)
    assert len(load_benchmark("ja-vg-vqa-500", path=tmp_path / "d")) == 1
    train = load_benchmark("ja-vg-vqa-500", path=tmp_path / "d", split="train")
    assert (len(train), train.split) == (2, "train")
    with pytest.raises(EvoVLMError, match="no data for split 'dev'"):
        load_benchmark("ja-vg-vqa-500", path=tmp_path / "d", split="dev")


def test_vqa_missing_columns_and_images(tmp_path):
    write_png(tmp_path / "a.png")
    cases = {
        "missing column 'image'": {"question": "q", "answer": "a"},
        "missing column 'question' \\(or 'qas'\\)": {"image": "a.png", "answer": "a"},
        "missing column 'answer'": {"image": "a.png", "question": "q"},
        "'qas' must be a non-empty list": {"image": "a.png", "qas": []},
        "image file .*nope.png does not exist": {"image": "nope.png", "question": "q", "answer": "a"},
    }
    for i, (pattern, row) in enumerate(cases.items()):
        with pytest.raises(EvoVLMError, match=pattern):
            load_benchmark("ja-vg-vqa-500", path=write_jsonl(tmp_path / f"c{i}.jsonl", [row]))


def test_vqa_missing_dataset_message(no_default_data):
    with pytest.raises(EvoVLMError) as info:
        load_benchmark("ja-vlm-bench-in-the-wild")
    message = str(info.value)
    assert "SakanaAI/JA-VLM-Bench-In-the-Wild" in message and "--data" in message and "$EVOVLM_JA_VLM_WILD" in message


def test_vqa_parquet(tmp_path, no_default_data):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        # Without pyarrow the HF parquet layout must fail with a clear, actionable message.
        fake_hf_repo(no_default_data / "hf-cache", "SakanaAI/JA-VG-VQA-500", {"data/test-00000-of-00001.parquet": ""})
        with pytest.raises(EvoVLMError, match="needs pyarrow"):
            load_benchmark("ja-vg-vqa-500")
        return
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    table = pa.table({"image": [{"bytes": buf.getvalue(), "path": "1.png"}],
                      "qas": [[{"question": "何？", "answer": "猫"}]], "image_id": [1]})
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(table, path)
    [sample] = load_benchmark("ja-vg-vqa-500", path=path).samples
    assert (sample.question, sample.reference, sample.image.size) == ("何？", "猫", (8, 8))
    pq.write_table(pa.table({"image": [{"bytes": b"not an image", "path": "x.png"}], "question": ["q"],
                             "answer": ["a"]}), tmp_path / "junk.parquet")
    with pytest.raises(EvoVLMError, match=r"junk.parquet row 0: its image bytes are not a readable image"):
        load_benchmark("ja-vg-vqa-500", path=tmp_path / "junk.parquet")
    (tmp_path / "text.jsonl").write_text('{"image": {"bytes": "iVBORw0KGgo="}, "question": "q", "answer": "a"}\n')
    with pytest.raises(EvoVLMError, match="text.jsonl:1: image bytes must be binary data .* not str"):
        load_benchmark("ja-vg-vqa-500", path=tmp_path / "text.jsonl")
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), tmp_path / "noimg.parquet")
    with pytest.raises(EvoVLMError, match="no column 'image'"):
        load_benchmark("ja-vg-vqa-500", path=tmp_path / "noimg.parquet")


def test_register_synthetic_benchmark():
    """What the zoo does: a loader honouring split, data_seed and limit, with fresh draws per seed."""
    import random

    def synthetic(*, split, data_seed, path, limit):
        rng = random.Random(f"{split}-{data_seed}")
        samples = []
        for i in range(limit or 10):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            samples.append(Sample(id=str(i), question=f"{a}+{b}は？", reference=str(a + b)))
        return Benchmark(name="toy-add", kind="math", samples=samples, generation=benchmarks.MGSM_DEFAULTS,
                         split=split or "train", data_seed=data_seed, source="synthetic")

    register_benchmark("toy-add", synthetic, description="toy")
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_benchmark("toy-add", synthetic)
        draw1 = load_benchmark("toy-add", split="val", data_seed=1, limit=4)
        draw2 = load_benchmark("toy-add", split="val", data_seed=2, limit=4)
        assert len(draw1) == 4 and draw1.split == "val" and draw1.data_seed == 1
        assert [s.question for s in draw1.samples] != [s.question for s in draw2.samples]
        assert [s.question for s in draw1.samples] == [s.question for s in load_benchmark(
            "toy-add", split="val", data_seed=1, limit=4).samples]
        assert "toy-add" in list_benchmarks()
    finally:
        benchmarks._REGISTRY.pop("toy-add")
