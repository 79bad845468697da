"""The demo's logic without a server: model list, LRU cache, input bounds, prompts, case studies, runs.

The fabricated results files and run directories come from helpers.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from evovlm.app import cases as case_lib
from evovlm.app import plots
from evovlm.app import runs as run_lib
from evovlm.app.cache import ModelCache, runner_loader
from evovlm.app.config import SHIPPED_MODELS, Limits, Registry, load_config
from evovlm.app.generate import (
    Decoding,
    UserError,
    chat_prompt,
    check_question,
    format_error,
    load_image,
    merge_streams,
)
from evovlm.errors import EvoVLMError
from helpers import TINY, make_results, make_run_dir, png_header_only

REAL_IDS = {"SakanaAI/EvoVLM-JP-v1-7B", "llava-hf/llava-v1.6-mistral-7b-hf", "SakanaAI/EvoLLM-JP-v1-7B",
            "augmxnt/shisa-gamma-7b-v1"}


# -- model list ---------------------------------------------------------------------------------------

def test_shipped_models_yaml_lists_zoo_defaults_and_real_models():
    config = load_config(SHIPPED_MODELS)
    refs = {m.ref for m in config.models}
    assert {"zoo:evovlm", "zoo:vlm", "zoo:evollm", "zoo:math"} <= refs and REAL_IDS <= refs
    assert config.defaults == {"vqa": ["zoo:evovlm", "zoo:vlm"], "chat": ["zoo:evollm", "zoo:math"]}
    vqa = config.generation["vqa"]
    assert (vqa.template, vqa.num_beams, vqa.repetition_penalty, vqa.max_new_tokens) == ("ja-shisa-vqa", 5, 1.5, 512)
    from evovlm.eval.prompts import template_names

    assert all(m.template in template_names() for m in config.models if m.template)
    registry = Registry(config)  # whatever exists on this machine, checking never raises
    for name, value in registry.choices("vqa") + registry.choices("chat"):
        assert value in {m.name for m in config.models} and name.startswith(value)
    assert set(registry.default_pair("vqa")) <= {m.name for m in config.models}


def write_models(path: Path, extra: str = "") -> Path:
    path.write_text(f"""\
models:
  - {{name: gone-vlm, ref: zoo:does-not-exist, kind: vlm}}
  - {{name: tiny-llava, ref: {TINY / 'llava'}, kind: vlm}}
  - {{name: tiny-llava-next, ref: {TINY / 'llava-next'}, kind: vlm}}
  - {{name: tiny-math, ref: {TINY / 'math'}, kind: llm}}
  - {{name: real-llm, ref: SakanaAI/EvoLLM-JP-v1-7B-not-cached-here, kind: llm}}
defaults:
  vqa: [gone-vlm, tiny-llava-next]
  chat: [real-llm, gone-vlm]
{extra}""", encoding="utf-8")
    return path


def test_missing_defaults_fall_back_to_available_models(tmp_path):
    registry = Registry(load_config(write_models(tmp_path / "models.yaml")))
    assert registry.default_pair("vqa") == ("tiny-llava", "tiny-llava-next")
    assert registry.default_pair("chat") == ("tiny-math", "tiny-llava")  # LLMs first, then VLMs
    labels = dict((value, label) for label, value in registry.choices("vqa"))
    assert labels["gone-vlm"] == "gone-vlm (unavailable: zoo model not built yet)"
    assert labels["tiny-llava"] == "tiny-llava"
    status = registry.status("real-llm")
    assert not status.ok and "local Hugging Face cache" in status.reason
    assert registry.kind("tiny-math") == "llm" and registry.kind("tiny-llava") == "vlm"
    assert not registry.status("no-such-entry").ok


def test_download_on_first_use_only_when_allowed_and_online(tmp_path, monkeypatch):
    config = load_config(write_models(tmp_path / "m.yaml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # resolving stays local_files_only: no network either way
    registry = Registry(config, allow_download=True)
    status = registry.status("real-llm")
    assert status.ok and status.downloadable and status.path is None
    assert not registry.status("gone-vlm").ok  # zoo names are never downloadable
    assert "download on first use" in {row[3] for row in registry.table()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = Registry(config, allow_download=True).status("real-llm")
    assert not offline.ok and "HF_HUB_OFFLINE is set" in offline.reason
    default = Registry(config).status("real-llm")  # the default: never fetched; the reason says how to opt in
    assert not default.ok and "--download" in default.reason and "EVOVLM_APP_DOWNLOAD=1" in default.reason
    assert "--download" not in Registry(config).status("gone-vlm").reason  # a zoo model cannot be fetched


def test_no_model_available_still_gives_a_selection(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("models: [{name: a, ref: zoo:nope-a, kind: vlm}, {name: b, ref: zoo:nope-b, kind: vlm}]\n")
    assert Registry(load_config(path)).default_pair("vqa") == ("a", "b")


@pytest.mark.parametrize("text, message", [
    ("models: []", "bad.yaml: models: list should have at least 1 item"),
    ("models: [{name: x}]", r"bad.yaml: models\[0\]: needs a 'ref'"),
    ("models: [a, {ref: a, kind: robot}]", r"bad.yaml: models\[1\]\.kind: input should be 'vlm' or 'llm', got 'robot'"),
    ("models: [a, a]", "bad.yaml: models: duplicate model name 'a'"),
    ("models: [a]\nlimits: {max_beams: many}", "bad.yaml: limits.max_beams: expected an integer, got 'many'"),
    ("models: [a]\ngeneration: {vqa: {num_beams: 0}}",
     r"bad.yaml: generation\.vqa\.num_beams: expected an integer >= 1"),
    ("models: [a]\ngeneration: {image: {num_beams: 2}}", "bad.yaml: generation.image: input should be 'vqa' or 'chat'"),
    ("models: [a]\ncache: {max_resident: 0}", "bad.yaml: cache.max_resident: expected an integer >= 1, got 0"),
    ("models: [a]\nsurprise: 1", "bad.yaml: unknown key.s. surprise; known: cache, defaults"),
])
def test_bad_models_yaml(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(EvoVLMError, match=message):
        load_config(path)


def test_override_keeps_unset_sections(tmp_path):
    config = load_config(write_models(tmp_path / "m.yaml", "generation: {vqa: {max_new_tokens: 8}}\n"))
    assert config.generation["vqa"].max_new_tokens == 8 and config.generation["vqa"].num_beams == 5
    assert config.limits == Limits() and config.max_resident == 2


def test_evovlm_demo_command_and_models_variable(tmp_path, capsys, monkeypatch):
    from evovlm.cli import main

    models = write_models(tmp_path / "m.yaml")
    assert main(["demo", "--check", "--models", str(models)]) == 0
    out = capsys.readouterr().out
    assert "tiny-llava " in out and " available " in out and "unavailable" in out
    monkeypatch.setenv("EVOVLM_APP_MODELS", str(models))
    assert load_config().source == str(models)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "not-a-port")
    assert main(["demo", "--models", str(models)]) == 2
    assert "GRADIO_SERVER_PORT" in capsys.readouterr().err


# -- LRU cache ------------------------------------------------------------------------------------------

def test_cache_is_lazy_bounded_and_least_recently_used_first():
    loads: list[str] = []
    cache = ModelCache(lambda name: loads.append(name) or f"runner:{name}", max_resident=2)
    assert cache.resident() == [] and loads == []  # nothing loads before it is asked for
    for name in ["a", "b", "a", "c"]:
        with cache.use(name) as slot:
            assert slot.runner == f"runner:{name}"
    assert loads == ["a", "b", "c"] and cache.resident() == ["a", "c"]  # b was least recently used
    with cache.use("a"), cache.use("b"), cache.use("d"):  # all in use: nothing can be evicted yet
        assert len(cache.resident()) == 3
    # d was released first, while a and b were still in use: it is the one that goes.
    assert cache.resident() == ["a", "b"] and loads == ["a", "b", "c", "b", "d"]


def test_cache_loads_each_model_once_under_concurrency():
    loads: list[str] = []
    gate = threading.Event()

    def slow_loader(name: str) -> str:
        gate.wait(2)
        loads.append(name)
        return name

    cache = ModelCache(slow_loader, max_resident=2)

    def use() -> None:
        with cache.use("m"):
            pass

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "a request is stuck in the cache (deadlock)"
    assert loads == ["m"]


def test_cache_load_failure_is_not_cached():
    calls = []

    def loader(name: str) -> str:
        calls.append(name)
        if len(calls) == 1:
            raise EvoVLMError("broken weights")
        return name

    cache = ModelCache(loader, max_resident=1)
    with pytest.raises(EvoVLMError), cache.use("m"):
        pass
    with cache.use("m") as slot:
        assert slot.runner == "m"


# -- bounded inputs ------------------------------------------------------------------------------------

def test_images_are_bounded(tmp_path):
    from PIL import Image

    limits = Limits(max_image_side=512, max_image_pixels=4_000_000)
    Image.new("RGB", (1800, 900), "red").save(tmp_path / "big.png")
    image, note = load_image(str(tmp_path / "big.png"), limits)
    assert image.size == (512, 256) and image.mode == "RGB" and "1800×900" in note
    Image.new("L", (100, 80)).save(tmp_path / "grey.jpg")
    image, note = load_image(str(tmp_path / "grey.jpg"), limits)
    assert image.mode == "RGB" and note == ""
    with pytest.raises(UserError, match="too large"):
        load_image(str(png_header_only(tmp_path / "bomb.png", 100_000, 100_000)), limits)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="not a readable image"):
        load_image(str(tmp_path / "notes.txt"), limits)
    with pytest.raises(UserError, match="not a readable image"):
        load_image(str(tmp_path / "missing.png"), limits)


def test_pasted_image_data_is_opened_by_the_bounded_loader(tmp_path):
    """A data: URL went to Gradio's own decoder: junk was its bare error, and no pixel budget applied."""
    import base64
    import io

    from gradio.data_classes import FileData
    from PIL import Image

    from evovlm.app.ui import UploadedImage

    limits = Limits(max_image_pixels=10_000)
    component = UploadedImage(type="filepath")

    def pasted(data: bytes) -> object:
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        return component.preprocess(FileData(path=str(tmp_path / "pasted.png"), url=url))

    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(buffer, format="PNG")
    assert load_image(pasted(buffer.getvalue()), limits)[0].size == (20, 10)
    for junk in (b"AAAA", b""):
        with pytest.raises(UserError, match="not a readable image"):
            load_image(pasted(junk), limits)
    buffer = io.BytesIO()
    Image.new("1", (200, 200)).save(buffer, format="PNG")  # 40,000 pixels: over this budget
    with pytest.raises(UserError, match="too large"):
        load_image(pasted(buffer.getvalue()), limits)
    assert component.preprocess(FileData(path=str(tmp_path / "up.png"))) == str(tmp_path / "up.png")


def test_a_columns_error_names_no_server_path():
    shown = format_error(EvoVLMError("cannot load AutoModelForCausalLM from /srv/models/broken-ja: bad header"))
    assert shown == "⚠ cannot load AutoModelForCausalLM from …/broken-ja: bad header", shown
    assert format_error(UserError("prompt too long for /srv/models/tiny-math")).endswith("for …/tiny-math")


def test_questions_and_settings_are_bounded():
    limits = Limits(max_question_chars=10, max_new_tokens=64, max_beams=4)
    assert check_question("  何？ ", limits) == "何？"
    for empty in ("", "   ", None):
        with pytest.raises(UserError, match="Please type a question"):
            check_question(empty, limits)
    with pytest.raises(UserError, match="too long"):
        check_question("あ" * 11, limits)
    assert Decoding.clamped(99, 10_000, 9.0, limits) == Decoding(4, 64, 2.0)
    assert Decoding.clamped(0, -5, 0.1, limits) == Decoding(1, 1, 1.0)
    assert Decoding.clamped("x", None, "y", limits) == Decoding(1, 64, 1.0)
    nan, inf = float("nan"), float("inf")  # NaN reaches a handler through the raw HTTP API
    assert Decoding.clamped(nan, nan, nan, limits) == Decoding(1, 64, 1.0)
    assert Decoding.clamped(inf, inf, -inf, limits) == Decoding(4, 64, 1.0)


class _Tokenizer:
    chat_template = None


class _Runner:
    name = "fake"
    tokenizer = _Tokenizer()


def test_chat_prompt_multi_turn_with_the_papers_template():
    messages = [{"role": "user", "content": "1+1は？"}, {"role": "assistant", "content": "2です。"},
                {"role": "user", "content": "2+2は？"}]
    prompt = chat_prompt(_Runner(), messages, "auto")  # no chat template: ja-alpaca-cot
    assert prompt.text.startswith("以下に、あるタスクを説明する指示があります。")
    assert prompt.text.endswith("### 指示:\n1+1は？\n\n### 応答:\n2です。\n\n### 指示:\n2+2は？\n\n### 応答:")
    assert prompt.add_special_tokens and "### 指示" in prompt.stop_strings
    with pytest.raises(UserError, match="no chat template"):
        chat_prompt(_Runner(), messages, "chat")


def test_chat_prompt_with_a_short_literal_template():
    messages = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                {"role": "user", "content": "2+2?"}]
    prompt = chat_prompt(_Runner(), messages, "Q: {input}\nA:")  # the zoo's format, as a literal
    assert prompt.text == "Q: 1+1?\nA: 2\nQ: 2+2?\nA:" and prompt.stop_strings == ("\nQ:",)


def test_chat_prompt_uses_the_tokenizers_chat_template():
    seen = {}

    class Tokenizer:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, **kwargs):
            seen.update(messages=messages, **kwargs)
            return "<rendered>"

    runner = type("R", (), {"name": "r", "tokenizer": Tokenizer()})()
    prompt = chat_prompt(runner, [{"role": "user", "content": "こんにちは"}], "auto")
    assert prompt.text == "<rendered>" and not prompt.add_special_tokens
    assert seen["messages"] == [{"role": "user", "content": "こんにちは"}] and seen["add_generation_prompt"]


def test_merge_streams_isolates_a_failing_column():
    def good():
        yield "あ"
        yield "あい"

    def bad():
        yield "x"
        raise RuntimeError("boom in /srv/secret/model.py")

    updates = list(merge_streams([good, bad], ["", ""]))
    # the failing column says so; the visitor sees neither the exception's type nor its message (paths)
    assert updates[-1][0] == "あい" and updates[-1][1].startswith("⚠") and "server log" in updates[-1][1]
    assert "RuntimeError" not in updates[-1][1] and "/srv/secret" not in updates[-1][1]


# -- case studies ----------------------------------------------------------------------------------------

def test_case_study_pairing_filtering_sorting_and_search(tmp_path):
    path_a, path_b = make_results(tmp_path)
    a, b = case_lib.read_results(path_a), case_lib.read_results(path_b)
    assert case_lib.metric_choices(a, b)[0] == "rougeL_ja"
    cases = case_lib.pair(a, b, "rougeL_ja")
    assert [c.diff for c in cases] == [50.0, 50.0, -50.0, 0.0]
    assert [c.id for c in case_lib.select(cases, "A wins")] == ["q0", "q1"]
    assert [c.id for c in case_lib.select(cases, "B wins")] == ["q2"]
    assert [c.id for c in case_lib.select(cases, "ties")] == ["q3"]
    assert [c.id for c in case_lib.select(cases, "all", case_lib.SORTS[2])][0] == "q2"
    assert [c.id for c in case_lib.select(cases, "all", search="海")] == ["q1"]  # B's response
    summary = case_lib.summary_markdown(a, b, cases, 4, "rougeL_ja")
    assert "A wins 2, B wins 1, ties 1" in summary and "zoo:evovlm" in summary
    assert "rougeL_ja: A = 52.50, B = 40.00" in summary  # the corpus scores written in the files
    single = case_lib.pair(a, None, "rougeL")
    assert len(single) == 4 and single[0].score_b is None
    assert case_lib.table(single)[0][:4] == [0, "q0", "画像0には何がありますか？", "80.0"]


def test_case_study_summary_names_the_corpus_score_of_a_per_sample_field(tmp_path):
    """MGSM files score each sample as correct_ja (true/false) and the corpus as acc_ja (percent)."""
    path_a, path_b = make_results(tmp_path)
    a, b = case_lib.read_results(path_a), case_lib.read_results(path_b)
    a.summary, b.summary = {"n": 4, "acc": 100.0, "acc_ja": 90.0}, {"n": 4, "acc": 50.0, "acc_ja": 0.0}
    summary = case_lib.summary_markdown(a, b, case_lib.pair(a, b, "correct_ja"), 4, "correct_ja")
    assert "acc_ja: A = 90.00, B = 0.00" in summary
    assert "acc: A = 100.00" in case_lib.summary_markdown(a, None, case_lib.pair(a, None, "correct"), 4, "correct")


def test_case_study_rejects_bad_files(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not a results JSON"):
        case_lib.read_results(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"model": "m"}')
    with pytest.raises(UserError, match="no 'samples'"):
        case_lib.read_results(tmp_path / "y.json")
    with pytest.raises(UserError, match="not found"):
        case_lib.read_results(tmp_path / "missing.json")


def test_mgsm_results_compare_correctness(tmp_path):
    def write(name: str, correct: list[bool]) -> Path:
        samples = [{"index": i, "id": str(i), "question": "q", "reference": "1", "response": "r", "correct": c,
                    "correct_ja": c, "extracted": 1.0} for i, c in enumerate(correct)]
        path = tmp_path / name
        path.write_text(json.dumps({"schema_version": 1, "model": name, "bench": "mgsm-ja", "metric": "mgsm",
                                    "summary": {"acc_ja": 50.0}, "samples": samples}))
        return path

    a, b = case_lib.read_results(write("a.json", [True, False])), case_lib.read_results(write("b.json", [False, False]))
    assert case_lib.metric_choices(a, b) == ["correct_ja", "correct"]
    assert [c.diff for c in case_lib.pair(a, b, "correct_ja")] == [100.0, 0.0]


# -- evolution runs ----------------------------------------------------------------------------------------

def test_run_reader_and_plots(tmp_path):
    run = run_lib.read_run(make_run_dir(tmp_path / "run"))
    (stage,) = run.stages
    assert run.dir.mode == "ps" and run.dir.format_version == 1 and not run.dir.finished
    assert len(stage.candidates) == 20 and len(stage.failed) == 1 and stage.skipped_lines == 1  # torn last line
    assert stage.failed[0].error == "RuntimeError: CUDA out of memory"
    best = run_lib.top(stage)
    assert (best.generation, best.index, best.fitness) == (3, 3, pytest.approx(0.38))
    assert [(v.generation, v.index) for v in stage.validations] == [(0, 4), (1, 4), (2, 4), (3, 3)]
    assert [v.fitness for v in stage.validations] == pytest.approx([0.3, 0.31, 0.32, 0.33])
    assert run_lib.dfs_path(run) is None and stage.model_dir is None
    names, groups, weights = run_lib.recipe_matrix(run, "weight")
    assert [Path(n).name for n in names] == ["ja", "math"] and groups == ["layers.0", "layers.1", "default"]
    assert weights == [[0.75, 0.25, 0.5], [0.4, 0.4, 0.4]]
    assert run_lib.recipe_matrix(run, "density")[2] == [[0.6, 0.6, 0.6], [0.8, 0.7, 1.0]]
    summary = run_lib.summary_markdown(run)
    assert "best fitness so far: 0.38" in summary and "failed: 1" in summary and "out of memory" in summary
    assert "chosen by validation: generation 3, candidate 3 (validation 0.33" in summary
    assert run_lib.scores_table(run) == [["best merged", "fitness · generation 3, candidate 3", 0.38],
                                         ["best merged", "validation", 0.33]]
    assert run.recipe_text.startswith("# Best candidate so far: generation 3, index 3, fitness 0.38 (acc_ja)")
    frame = plots.fitness_frame(run)  # generation g's fitness is 0.2 + 0.05 g + 0.01 i; the last one failed
    best = frame[frame.series == "best so far"]
    assert best.generation.tolist() == [0, 1, 2, 3] and best.fitness.tolist() == pytest.approx([0.24, 0.29, 0.34, 0.38])
    assert frame[frame.series == "validation"].fitness.notna().all()
    assert plots.heatmap_plot(run).size[0] > 300
    assert plots.dfs_plot(run) is None


def test_run_reader_on_a_hybrid_run_and_on_damaged_ones(tmp_path):
    run = run_lib.read_run(make_run_dir(tmp_path / "hybrid", dfs=True))
    ps, dfs = run.stages
    assert ps.finished and ps.model_dir == tmp_path / "hybrid" / "ps" / "model" and not dfs.finished
    assert len(dfs.candidates) == 9 and dfs.skipped_lines == 1 and ps.skipped_lines == 0
    assert [(c.generation, c.index, c.fitness) for c in dfs.candidates if c.start] == [(0, 4, 0.25)]
    assert run_lib.dfs_path(run) == [(0, "A", 0, 1.0), (1, "B", 1, 0.8), (2, "B", 0, 1.2), (3, "A", 1, 0.9)]
    assert run_lib.model_names(run) == {"A": "PS result", "B": "math"}
    assert ["PS result", "DFS start: model A itself", 0.25] in run_lib.scores_table(run)
    assert run.recipe_text.startswith("# ps/best_recipe.yaml\n# Best candidate")
    assert "\n# dfs/best_dfs.yaml\n# Best candidate so far: generation 1, index 0" in run.recipe_text
    assert plots.dfs_plot(run) is not None and plots.heatmap_plot(run) is not None
    summary = run_lib.summary_markdown(run)
    assert "PS: generations: 4 · candidates: 20 · failed: 1 · finished" in summary
    assert "PS: model: `ps/model`" in summary
    assert "DFS: **best fitness so far: 0.4**" in summary

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.yaml").write_text("mode: ps\nseed: [unclosed\n")
    (damaged / "history.jsonl").write_text('{"type": "candidate", "generation": 0, "index": 0, "fitness": 1.5}\n'
                                           '{"generation": 1, "fitness": 2}\nnonsense\n[1, 2]\n'
                                           '{"type": "candidate", "generation": -1, "index": 0, "fitness": 3}\n')
    (damaged / "best_recipe.yaml").write_text("just a string\n")
    run = run_lib.read_run(damaged)
    assert [c.fitness for c in run.stages[0].candidates] == [1.5] and run.stages[0].skipped_lines == 4
    summary = run_lib.summary_markdown(run)
    assert "`config.yaml` is not valid YAML" in summary and "`best_recipe.yaml` is not a best PS file" in summary
    assert plots.heatmap_plot(run) is None and plots.fitness_frame(run).fitness.tolist() == [1.5, 1.5, 1.5]
    empty = run_lib.read_run(tmp_path / "nothing-here")
    assert "no config.yaml or history.jsonl" in run_lib.summary_markdown(empty)
    assert plots.fitness_frame(empty).empty
    assert run_lib.find_runs([tmp_path]) == [str(tmp_path / "damaged"), str(tmp_path / "hybrid")]  # not ps/, dfs/


# -- streaming on a real (tiny) model -------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["math", "llava"])
def test_streamed_greedy_answer_grows_and_equals_the_runners(model):
    from PIL import Image

    from evovlm.app.cache import Slot, warm_imports
    from evovlm.app.generate import stream, vqa_prompt
    from evovlm.eval.runners import GenerationSettings, load_runner

    warm_imports()
    runner = load_runner(TINY / model)
    image = Image.new("RGB", (40, 30), (10, 200, 30)) if model == "llava" else None
    if image is None:
        prompt = chat_prompt(runner, [{"role": "user", "content": "3+4は？"}], "ja-alpaca-cot")
    else:
        prompt = vqa_prompt(runner, "何色ですか？", "ja-shisa-vqa")
    decoding = Decoding(num_beams=1, max_new_tokens=24, repetition_penalty=1.3)
    updates = list(stream(Slot(runner), lambda r: prompt, decoding, image))
    assert len(updates) > 1 and all(b.startswith(a) for a, b in zip(updates, updates[1:]))
    expected = runner.generate([prompt.text], GenerationSettings(max_new_tokens=24, repetition_penalty=1.3,
                                                                 stop_strings=prompt.stop_strings),
                               images=[image] if image is not None else None, progress=False)[0]
    assert updates[-1].strip() == expected
    beam = list(stream(Slot(runner), lambda r: prompt, Decoding(3, 12, 1.5), image))
    assert len(beam) == 1 and beam[0]  # beam search: one final answer


def test_case_browser_reads_what_evaluate_writes(tmp_path):
    """The schema contract: a results file written by the evaluator itself (tiny VLM, 2 samples)."""
    from PIL import Image

    from evovlm.app.cache import warm_imports
    from evovlm.eval.benchmarks import VQA_DEFAULTS, Benchmark, Sample
    from evovlm.eval.evaluate import evaluate, write_results
    from evovlm.eval.runners import load_runner

    warm_imports()
    images = []
    for i, colour in enumerate(["red", "blue"]):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), colour).save(images[-1])
    bench = Benchmark(name="tiny-vqa", kind="vqa", generation=VQA_DEFAULTS, samples=[
        Sample(id=f"s{i}", question="何色ですか？", reference=ref, image=str(p), image_ref=str(p))
        for i, (p, ref) in enumerate(zip(images, ["赤", "青"]))])
    results = evaluate(load_runner(TINY / "llava"), bench, generation={"max_new_tokens": 4, "num_beams": 1},
                       n_resamples=10, progress=False)
    path = write_results(results, tmp_path / "tiny.json")
    loaded = case_lib.read_results(path)
    assert case_lib.metric_choices(loaded)[0] == "rougeL_ja"
    cases = case_lib.pair(loaded, loaded, "rougeL_ja")
    assert [c.id for c in cases] == ["s0", "s1"] and all(c.diff == 0 for c in cases)
    assert cases[1].image == str(images[1]) and cases[1].reference == "青"


def test_the_demo_finds_the_zoo_without_installed_entry_points():
    """`python app.py` in a checkout never pip-installed (a Space built from requirements.txt) has no
    entry points: the app registers the zoo itself, once."""
    import subprocess
    import sys

    code = ("import evovlm.plugins as plugins\n"
            "plugins.entry_points = lambda group: []\n"  # what an uninstalled checkout sees
            "from evovlm.io.resolve import known_prefixes, resolve_model_path\n"
            "plugins.load_plugins()\n"
            "assert 'zoo:' not in known_prefixes()\n"
            "from evovlm.app.cli import ensure_zoo\n"
            "ensure_zoo(); ensure_zoo()\n"
            "print(resolve_model_path('zoo:vlm').name)\n"
            "from evovlm.eval.prompts import template_names\n"
            "print('zoo-qa' in template_names())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["vlm", "True"]


# -- the showcase: per-model settings, graded examples, bundled results and runs (issue 16) -------------------

def test_shipped_zoo_models_get_their_own_settings_and_7b_models_the_papers():
    config = load_config()
    zoo_vqa, zoo_chat = config.decoding("vqa", "zoo:evovlm"), config.decoding("chat", "zoo:evollm")
    assert (zoo_vqa.num_beams, zoo_vqa.repetition_penalty, zoo_vqa.max_new_tokens) == (1, 1.0, 40)
    assert (zoo_chat.num_beams, zoo_chat.repetition_penalty, zoo_chat.max_new_tokens) == (1, 1.0, 40)
    paper = config.decoding("vqa", "EvoVLM-JP-v1-7B")
    assert (paper.num_beams, paper.repetition_penalty, paper.max_new_tokens) == (5, 1.5, 512)
    assert all(config.entry(name).single_turn for name in ("zoo:evovlm", "zoo:vlm", "zoo:evollm", "zoo:math"))
    assert config.label("zoo:evollm") == "zoo:evollm · evolved merge"
    assert config.label("zoo:math") == "zoo:math · source: math expert"


def test_server_paths_are_not_shown_to_visitors():
    from evovlm.app.config import public_reason

    reason = ("SakanaAI/EvoVLM-JP-v1-7B is not in the local Hugging Face cache "
              "(/root/.cache/huggingface/hub/models--SakanaAI--EvoVLM-JP-v1-7B); run with --download")
    assert public_reason(reason) == ("SakanaAI/EvoVLM-JP-v1-7B is not in the local Hugging Face cache "
                                     "(…/models--SakanaAI--EvoVLM-JP-v1-7B); run with --download")
    assert public_reason("model directory '/srv/models/ja' does not exist") == "model directory '…/ja' does not exist"


@pytest.mark.parametrize("response, expected", [
    ("8+15=23; 答えは23です。",
     ["✔ 正解 right (answer 23, reference 23)", "日本語 Japanese ✔", "counts for acc_ja ✔"]),
    ("8+15=23; The answer is 23.", ["✔ 正解 right", "日本語でない not Japanese ✘", "does not count"]),
    ("8+15=24; 答えは24です。", ["✘ 不正解 wrong (answer 24, reference 23)", "日本語 Japanese ✔"]),
])
def test_math_answers_are_graded_against_the_reference(response, expected):
    from evovlm.app.examples import Example, grade

    verdict = grade(Example("8+15は？", "23", "math"), response)
    assert all(part in verdict for part in expected), verdict


def test_vqa_answers_are_graded_on_content_japanese_and_rouge():
    from evovlm.app.examples import Example, grade

    example = Example("丸は何色ですか？", "丸=青; 答えは青です。", "vqa", {"accepted": ["青"], "wrong": ["赤", "黄色"]})
    right = "✔ 正解 right (expected 青) · 日本語 Japanese ✔ · ROUGE-L-ja 100.0"
    assert grade(example, "丸=青; 答えは青です。") == right
    assert grade(example, "四角=1; 答えは1です。").startswith("✘ 不正解 wrong (expected 青) · 日本語 Japanese ✔")
    assert "not Japanese" in grade(example, "circle=blue; The answer is blue.")
    assert grade(example, "") == grade(example, "⚠ unavailable") == grade(None, "答えは青です。") == ""


def test_examples_are_found_again_only_with_their_image(tmp_path):
    from PIL import Image

    from evovlm.app.examples import Example, ExampleSet

    first, other = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (8, 8), "red").save(first)
    Image.new("RGB", (8, 8), "blue").save(other)
    copy = tmp_path / "copy.png"  # what Gradio serves: a copy of the example file
    copy.write_bytes(first.read_bytes())
    examples = ExampleSet([Example("何色？", "赤", "vqa", image=str(first))], "examples")
    assert examples.find(" 何色？ ", str(copy)).reference == "赤"
    assert examples.find("何色？", str(other)) is None and examples.find("何色ですか？", str(first)) is None


def test_the_shipped_examples_are_the_first_test_questions_with_references():
    from evovlm.app.examples import benchmark_examples
    from evovlm.eval.benchmarks import load_benchmark
    from evovlm.plugins import load_plugins

    load_plugins()
    config = load_config()
    for task, count in (("vqa", 6), ("chat", 5)):
        source = config.examples[task]
        examples = benchmark_examples(source, task)
        expected = load_benchmark(source.benchmark, split="test", limit=count).samples
        assert [(e.question, e.reference) for e in examples.examples] == [(s.question, s.reference) for s in expected]
        assert all(bool(e.image) and Path(e.image).is_file() for e in examples.examples) == (task == "vqa")
        if task == "vqa":  # the very pixels of the benchmark's images, whatever an earlier version left behind
            import numpy as np
            from PIL import Image

            pixels = [(np.asarray(Image.open(e.image).convert("RGB")), np.asarray(s.image.convert("RGB")))
                      for e, s in zip(examples.examples, expected)]
            assert all(np.array_equal(shown, drawn) for shown, drawn in pixels)


def test_example_images_are_named_by_their_content_so_a_stale_file_is_never_shown(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from evovlm.app import examples as module
    from evovlm.app.config import ExampleSource
    from evovlm.plugins import load_plugins

    load_plugins()
    monkeypatch.setattr(module, "example_dir", lambda: tmp_path)
    source = ExampleSource(benchmark="zoo-vqa-ja", split="test", count=1)
    (tmp_path / "zoo-vqa-ja").mkdir()
    Image.new("RGB", (48, 48), "white").save(tmp_path / "zoo-vqa-ja" / "000.png")  # what an older version wrote
    first = module.benchmark_examples(source, "vqa").examples[0]
    assert Path(first.image).name != "000.png"
    assert not np.array_equal(np.asarray(Image.open(first.image)), np.asarray(Image.new("RGB", (48, 48), "white")))


def test_the_header_reads_its_numbers_from_the_bundled_results():
    from evovlm.app.showcase import header_markdown

    config = load_config()
    header = header_markdown(config)
    results = json.loads((Path(config.showcase.headline[0])).read_text(encoding="utf-8"))
    summary = results["summary"]
    assert results["model"] == "zoo:evollm" and results["split"] == "test" and summary["n"] == 500
    row = (f"| zoo-mgsm-ja (n = 500) | zoo:evollm · evolved merge | acc_ja {summary['acc_ja']:.1f} "
           f"[{summary['acc_ja_ci_low']:.1f}, {summary['acc_ja_ci_high']:.1f}] | – |")
    assert row in header, header
    assert "zoo:evovlm · evolved merge | content_ja" in header and "1.3-1.4 M parameters" in header


def test_the_case_summary_tabulates_which_model_was_right():
    config = load_config()
    pair = config.showcase.results[0]
    a, b = case_lib.read_results(pair.a), case_lib.read_results(pair.b)
    cases = case_lib.pair(a, b, "correct_ja")
    table = case_lib.right_wrong_table(cases, "correct_ja", a, b)
    both = sum(1 for c in cases if c.a["correct_ja"] and c.b["correct_ja"])
    only_a = sum(1 for c in cases if c.a["correct_ja"] and not c.b["correct_ja"])
    assert f"| **A (zoo:evollm) right** | {both} | {only_a} |" in table
    assert only_a == round(a.summary["acc_ja"] * 5) and both == 0  # the math expert never answers in Japanese
    assert case_lib.right_wrong_table(case_lib.pair(a, b, "rougeL_ja"), "rougeL_ja", a, b) == ""


def test_runs_are_listed_newest_first(tmp_path):
    import os

    for age, name in enumerate(["newest", "middle", "oldest"]):
        folder = make_run_dir(tmp_path / name)
        os.utime(folder / "config.yaml", (1e9 - age * 1000, 1e9 - age * 1000))
    assert [Path(p).name for p in run_lib.find_runs([tmp_path])] == ["newest", "middle", "oldest"]


@pytest.mark.parametrize("text, stops, expected", [
    ("四角=0; 答えは0です10=10; 答えは10です", ["。", "."], ("四角=0; 答えは0です10=10; 答えは10です", False)),
    ("四角=0; 答えは0です。10=10; 答えは10です。", ["。", "."], ("四角=0; 答えは0です。", True)),
    ("circle=red; The answer is red. circle", ["。", "."], ("circle=red; The answer is red.", True)),
    ("no stops here.", [], ("no stops here.", False)),
])
def test_an_answer_ends_after_the_models_stop_string(text, stops, expected):
    from evovlm.app.ui import _ended

    assert _ended(text, stops) == expected


def test_chat_sends_a_single_turn_model_no_history(tmp_path):
    """The zoo's models were trained on one question at a time: an earlier turn must not change the answer."""
    from evovlm.app.ui import Demo

    config = load_config()
    registry = Registry(config)
    demo = Demo(config=config, registry=registry, cache=ModelCache(runner_loader(registry), 2))
    question = "11+5は？"
    fresh = list(demo.chat(question, [], [], "zoo:evollm", "zoo:math", "model default", 1, 40, 1.0))[-1]
    earlier = [{"role": "user", "content": "8+15は？"}, {"role": "assistant", "content": "8+15=23; 答えは23です。"}]
    again = list(demo.chat(question, earlier, [], "zoo:evollm", "zoo:math", "model default", 1, 40, 1.0))[-1]
    assert fresh[0][-1]["content"] == again[0][-1]["content"] and "答え" in again[0][-1]["content"]
    assert "zoo:evollm, zoo:math: single-turn" in again[3] and "single-turn" not in fresh[3]


def test_blind_rounds_hide_the_names_until_one_vote_counts():
    import random

    from evovlm.app import blind

    orders = {tuple(blind.new_round("x", "y", rng=random.Random(seed))["order"]) for seed in range(20)}
    assert orders == {("x", "y"), ("y", "x")}  # both column orders occur
    first = {"order": ["y", "x"], "voted": True}
    assert blind.new_round("x", "y", first, keep=True) == {"order": ["y", "x"], "voted": False}
    assert blind.new_round("x", "z", first, keep=True)["order"] != ["y", "x"]  # another pair: a new draw
    state, tally, message = blind.vote("B", {"order": ["y", "x"], "voted": False}, {})
    assert tally == {"x": 1} and "A was **y**, B was **x**: you preferred x" in message and state["voted"]
    assert blind.vote("A", state, tally)[1] == {"x": 1}  # a second vote on the same round counts nothing
    assert blind.vote("tie", {"order": ["x", "y"], "voted": False}, tally)[1] == {"x": 1, "ties": 1}
    assert blind.vote("A", None, tally)[2].startswith("Ask in blind mode first")
    assert blind.tally_markdown({"x": 2, "y": 3, "ties": 1}) == "Your votes this session: y 3, x 2, ties 1."
    config = load_config()
    assert blind.labels(config, state, revealed=False) == (f"A: {blind.HIDDEN}", f"B: {blind.HIDDEN}")
    assert blind.labels(config, {"order": ["zoo:math", "zoo:evollm"]}, revealed=True) == (
        "A: zoo:math · source: math expert", "B: zoo:evollm · evolved merge")


def test_a_blind_chat_round_answers_in_the_drawn_order_with_the_names_hidden():
    from evovlm.app import blind
    from evovlm.app.ui import Demo

    config = load_config()
    registry = Registry(config)
    demo = Demo(config=config, registry=registry, cache=ModelCache(runner_loader(registry), 2))
    settings = ("model default", 1, 40, 1.0)
    example = demo.examples["chat"].examples[0]  # zoo-mgsm-ja's first test problem (answer 23)
    steps = list(demo.blind_round("chat", True, None, example.question, [], [], "zoo:evollm", "zoo:math", *settings))
    first, (*outputs, state) = steps[0], steps[-1]
    assert first[0]["label"] == f"A: {blind.HIDDEN}" and first[1]["label"] == f"B: {blind.HIDDEN}"  # hidden at once
    history_a, history_b = outputs[0], outputs[1]  # later steps leave the labels alone (a vote may show them)
    by_model = dict(zip(state["order"], (history_a[-1]["content"], history_b[-1]["content"])))
    assert example.reference == "23" and outputs[4].startswith(("✔", "✘"))  # graded, in the drawn order
    assert "答えは23" in by_model["zoo:evollm"] and "The answer is 23" in by_model["zoo:math"]
    labels = demo.cast_vote("A", state, {})
    assert labels[0]["label"] == f"A: {config.label(state['order'][0])}" and labels[4] == {state["order"][0]: 1}
    *_, plain_state = list(demo.blind_round("chat", False, state, example.question, [], [], "zoo:evollm",
                                            "zoo:math", *settings))[-1]
    assert plain_state is state  # blind mode off: the plain handler, the round untouched


def test_the_bundled_run_shows_its_sources_as_the_lines_the_merge_beats():
    config = load_config()
    run = run_lib.read_run(Path(config.showcase.runs) / "zoo-ps")
    (stage,) = run.stages
    assert stage.finished and [c.source for c in stage.sources] == ["zoo:ja", "zoo:math"]
    frame = plots.fitness_frame(run)
    sources = frame[frame.series.str.startswith("source alone")]
    assert set(sources.series) == {"source alone: zoo:ja", "source alone: zoo:math"}
    best = frame[frame.series == "best so far"].fitness.iloc[-1]
    assert best == stage.best().candidate.fitness > sources.fitness.max()  # the merge beats both sources
    assert "each source alone: zoo:ja" in run_lib.summary_markdown(run)
    assert ["zoo:math", "source alone · fitness", sources[sources.series.str.endswith("zoo:math")].fitness.iloc[0]] \
        in run_lib.scores_table(run)


def test_the_difference_histogram_bins_a_minus_b():
    def case(a: float, b: float) -> case_lib.Case:
        return case_lib.Case("k", 0, "k", "", "", None, {}, {}, a, b)

    cases = [case(80, 75), case(80, 70), case(70, 80), case(50, 50), case(100, 0), case(0, 100), case(33, 0)]
    frame = case_lib.difference_histogram(cases)
    assert frame.values.tolist() == [["-100", 1], ["-10", 1], ["0", 1], ["+10", 2], ["+40", 1], ["+100", 1]]
    assert case_lib.difference_histogram([case(1, None)]).empty  # nothing paired: no bars
    assert case_lib.difference_histogram([case(1e308, -1e308)]).empty  # inf: no bar (it was an OverflowError)
    assert case_lib._score({"rougeL_ja": float("nan")}, "rougeL_ja") is None  # NaN in someone's results file
    assert case_lib._score({"rougeL_ja": 12.5}, "rougeL_ja") == 12.5
