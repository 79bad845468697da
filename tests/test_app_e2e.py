"""The demo end to end: ``python app.py`` in a subprocess on tiny models, driven through
``gradio_client`` (image QA, chat, case studies, runs, bad inputs, 20 concurrent requests) and
through a real browser (Debian's chromium + Playwright; skipped when either is missing).

The tiny models in examples/tiny are random: they answer gibberish, which is all the plumbing needs.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from helpers import TINY, make_results, make_run_dir, png_header_only, running_app  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
JA_QUESTION = "この画像には何が写っていますか？"


def _models_yaml(root: Path) -> Path:
    broken = root / "broken-vlm"  # resolvable (config.json) but its weights are garbage: loading fails
    shutil.copytree(TINY / "llava", broken)
    (broken / "model.safetensors").write_bytes(b"\0garbage" * 64)
    path = root / "models.yaml"
    path.write_text(f"""\
models:
  - {{name: missing-vlm, ref: zoo:not-built-in-this-test, kind: vlm}}
  - {{name: zoo:evovlm, ref: zoo:evovlm, kind: vlm, template: zoo-qa, max_new_tokens: 32}}
  - {{name: zoo:vlm, ref: zoo:vlm, kind: vlm, template: zoo-qa, max_new_tokens: 32}}
  - {{name: zoo:evollm, ref: zoo:evollm, kind: llm, template: zoo-qa, max_new_tokens: 32}}
  - {{name: zoo:math, ref: zoo:math, kind: llm, template: zoo-qa, max_new_tokens: 32}}
  - {{name: tiny-llava, ref: {TINY / 'llava'}, kind: vlm}}
  - {{name: tiny-llava-next, ref: {TINY / 'llava-next'}, kind: vlm, max_new_tokens: 6}}
  - {{name: broken-vlm, ref: broken-vlm, kind: vlm}}
  - {{name: tiny-math, ref: {TINY / 'math'}, kind: llm}}
  - {{name: tiny-ja, ref: {TINY / 'ja'}, kind: llm}}
  - {{name: EvoLLM-JP-v1-7B, ref: SakanaAI/EvoLLM-JP-v1-7B, kind: llm}}
defaults:
  vqa: [missing-vlm, tiny-llava-next]
  chat: [tiny-math, tiny-ja]
generation:
  vqa: {{max_new_tokens: 16}}
  chat: {{max_new_tokens: 16}}
limits: {{max_new_tokens: 32, max_question_chars: 200, max_image_side: 1024}}
cache: {{max_resident: 3}}
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, root): the app serving tiny models, with a runs folder and results files in root."""
    root = tmp_path_factory.mktemp("app")
    make_run_dir(root / "runs" / "run-ps")
    make_run_dir(root / "runs" / "run-dfs", dfs=True)
    make_results(root / "results")
    with running_app(root, "--models", str(_models_yaml(root)), "--runs-dir", str(root / "runs"),
                     "--allowed-path", str(root), "--concurrency", "2") as url:
        yield url, root


@pytest.fixture(scope="module")
def client(app):
    url, root = app
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(root / "downloads"))


def _image(root: Path, name: str = "apple.png", size: tuple[int, int] = (96, 64)) -> str:
    from PIL import Image

    path = root / name
    if not path.exists():
        Image.new("RGB", size, (200, 30, 30)).save(path)
    return str(path)


def ask(client: Client, image: str | None, question: str, a: str = "tiny-llava", b: str = "tiny-llava-next",
        beams: int = 1, tokens: int = 12) -> tuple[str, str, str]:
    """(status, answer A, answer B); the two grades that follow are empty for a question without a reference."""
    status, answer_a, answer_b, grade_a, grade_b = client.predict(
        handle_file(image) if image else None, question, a, b, "model default", beams, tokens, 1.5,
        api_name="/image_qa")
    assert (grade_a, grade_b) == ("", ""), "only an example's answers are graded"
    return status, answer_a, answer_b


def value(update: object) -> object:
    """A component's value, whether the handler returned it plainly or as ``gr.update(value=...)``."""
    return update.get("value") if isinstance(update, dict) and "__type__" in update else update


def _ok(answer: str) -> bool:
    return bool(answer) and not answer.startswith(("⚠", "…"))


# -- image QA and chat ----------------------------------------------------------------------------------

def test_image_qa_answers_in_both_columns_and_streams(app, client):
    _, root = app
    job = client.submit(handle_file(_image(root)), JA_QUESTION, "tiny-llava", "tiny-llava-next", "model default",
                        1, 24, 1.5, api_name="/image_qa")
    status, answer_a, answer_b, _, _ = job.result(timeout=120)
    assert status.startswith("✓") and _ok(answer_a) and _ok(answer_b), (status, answer_a, answer_b)
    assert len(answer_b) <= 6 < len(answer_a)  # B's models YAML entry caps it at 6 new tokens (characters)
    updates = job.outputs()
    assert len(updates) >= 2 and any("generating" in u[0] for u in updates)  # progress shown before the end
    # Beam search: no streaming, the final answer comes whole (and the UI says so).
    status, answer_a, answer_b = ask(client, _image(root), JA_QUESTION, beams=3)
    assert "Beam search cannot stream" in status and _ok(answer_a) and _ok(answer_b)


def test_chat_side_by_side_multi_turn(client):
    first = client.predict("りんごが3個あります。2個食べると何個残りますか？", [], [], "tiny-math", "tiny-llava",
                           "auto", 1, 12, 1.0, api_name="/chat")
    history_a, history_b, box, status, grade_a, grade_b = first
    assert (grade_a, grade_b) == ("", "")
    assert box == "" and status.startswith("✓")
    for history in (history_a, history_b):
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert _ok(history[1]["content"][0]["text"])
    second = client.predict("もう一度考えてください。", history_a, history_b, "tiny-math", "tiny-llava",
                            "ja-alpaca-cot", 1, 12, 1.0, api_name="/chat")
    for history in second[:2]:
        assert [m["role"] for m in history] == ["user", "assistant"] * 2
        assert history[2]["content"][0]["text"] == "もう一度考えてください。" and _ok(history[3]["content"][0]["text"])


# -- case studies and runs --------------------------------------------------------------------------------

def test_case_study_browser_loads_results_files(app, client):
    _, root = app
    a, b = handle_file(str(root / "results" / "evovlm.json")), handle_file(str(root / "results" / "llava.json"))
    out = client.predict(a, b, None, "all", "index", "", 0, api_name="/cases")
    summary, metric, table, position, image, question, reference, resp_a, resp_b, detail, histogram = out
    assert value(histogram)["data"] == [["-50", 1], ["0", 1], ["+50", 2]]  # A − B per sample: 50, 50, -50, 0
    assert "A wins 2, B wins 1, ties 1" in summary and metric["value"] == "rougeL_ja"  # a dropdown update
    assert [value for value, _ in metric["choices"]] == ["rougeL_ja", "rougeL", "rouge1", "rouge2"]
    assert [row[1] for row in table["data"]] == ["q0", "q1", "q2", "q3"]
    assert (question, reference, value(resp_a), value(resp_b)) == (
        "画像0には何がありますか？", "赤いりんご", "赤いりんごです", "りんご")
    assert value(image) and Path(value(image)).is_file() and "rougeL_ja = 80.0" in detail
    out = client.predict(a, b, "rougeL_ja", "B wins", "index", "", 0, api_name="/cases")
    assert [row[1] for row in out[2]["data"]] == ["q2"] and value(out[7]) == "犬がいます"
    out = client.predict(a, b, "rougeL_ja", "all", "|A − B| (largest first)", "海", 0, api_name="/cases")
    assert [row[1] for row in out[2]["data"]] == ["q1"]
    out = client.predict(a, b, "rougeL_ja", "all", "B − A (largest first)", "", 3, api_name="/cases")
    assert out[3] == 3 and out[5] == "画像1には何がありますか？"  # 4th of q2, q3, q0, q1
    single = client.predict(a, None, None, "all", "index", "", 0, api_name="/cases")
    assert "Showing 4 of 4" in single[0] and value(single[8]) == ""
    (root / "junk.json").write_text("{]")
    assert client.predict(handle_file(str(root / "junk.json")), None, None, "all", "index", "", 0,
                          api_name="/cases")[0].startswith("⚠")


def test_evolution_dashboard_reads_a_live_run(app, client):
    _, root = app
    run_dir = root / "runs" / "run-ps"
    summary, curve, heatmap, dfs, scores, recipe = client.predict(str(run_dir), api_name="/run")
    assert "best fitness so far: 0.38" in summary and "candidates: 20" in summary and "out of memory" in summary
    best = [row for row in curve["data"] if row[2] == "best so far"]  # the interactive curve's data
    assert [row[1] for row in best] == pytest.approx([0.24, 0.29, 0.34, 0.38])
    assert Path(value(heatmap)).is_file() and value(dfs) is None
    assert dfs.get("visible") is False  # a PS run has no layer path: its panel is hidden
    assert [row[:2] for row in scores["data"]] == [["best merged", "fitness · generation 3, candidate 3"],
                                                   ["best merged", "validation"]]
    assert recipe.startswith("# Best candidate so far") and "dare_ties" in recipe
    with (run_dir / "history.jsonl").open("a") as handle:  # the run goes on: a refresh sees it
        handle.write('\n{"type": "candidate", "generation": 4, "index": 0, "fitness": 0.9}\n')
    assert "best fitness so far: 0.9" in client.predict(str(run_dir), api_name="/run")[0]
    hybrid = client.predict(str(root / "runs" / "run-dfs"), api_name="/run")
    assert "PS: model: `ps/model`" in hybrid[0] and "DFS: **best fitness so far: 0.4**" in hybrid[0]
    assert Path(value(hybrid[3])).is_file() and "# dfs/best_dfs.yaml" in hybrid[5]  # the DFS layer path
    assert "outside the run folders" in client.predict("/etc", api_name="/run")[0]
    assert "not a directory" in client.predict(str(root / "runs" / "nope"), api_name="/run")[0]


# -- robustness ---------------------------------------------------------------------------------------------

def test_bad_inputs_get_friendly_messages(app, client):
    _, root = app
    status, a, b = ask(client, _image(root), "   ")
    assert "Please type a question" in status and (a, b) == ("", "")
    assert "Please upload an image" in ask(client, None, JA_QUESTION)[0]
    assert "too long" in ask(client, _image(root), "あ" * 201)[0]
    (root / "notes.txt").write_text("これは画像ではありません")
    assert "not a readable image" in ask(client, str(root / "notes.txt"), JA_QUESTION)[0]
    bomb = png_header_only(root / "bomb.png", 60_000, 60_000)
    assert "too large" in ask(client, str(bomb), JA_QUESTION)[0]
    status, a, b = ask(client, _image(root, "huge.png", (4000, 3000)), JA_QUESTION)
    assert "downscaled" in status and "4000×3000" in status and _ok(a) and _ok(b)


def test_unavailable_or_crashing_model_fails_in_its_column_only(client, app):
    _, root = app
    status, a, b = ask(client, _image(root), JA_QUESTION, a="missing-vlm")
    assert a.startswith("⚠ missing-vlm: unavailable") and "not found" in a and _ok(b)
    status, a, b = ask(client, _image(root), JA_QUESTION, a="tiny-llava", b="broken-vlm")
    assert _ok(a) and b.startswith("⚠") and status.startswith("✓")
    history_a, history_b, *_ = client.predict("こんにちは", [], [], "EvoLLM-JP-v1-7B", "tiny-ja", "auto", 1, 8, 1.0,
                                                api_name="/chat")
    assert "unavailable" in history_a[1]["content"][0]["text"] and _ok(history_b[1]["content"][0]["text"])
    table = client.predict(api_name="/models")[0]["data"]
    states = {row[0]: row[3] for row in table}
    assert not any(str(REPO) in cell or str(root) in cell for row in table for cell in row)  # no server paths
    assert states["tiny-llava"] == "available" and states["missing-vlm"] == "unavailable"


def test_zoo_models_once_built(app, client):
    """The shipped defaults (zoo:evovlm vs zoo:vlm, zoo:evollm vs zoo:math), when the zoo exists."""
    _, root = app
    states = {row[0]: row[3] for row in client.predict(api_name="/models")[0]["data"]}
    if not all(states[name] == "available" for name in ("zoo:evovlm", "zoo:vlm", "zoo:evollm", "zoo:math")):
        pytest.skip("the zoo models are not built yet (evovlm/zoo/models)")
    status, a, b = ask(client, _image(root), "何色ですか？", a="zoo:evovlm", b="zoo:vlm", beams=1, tokens=32)
    assert status.startswith("✓") and _ok(a) and _ok(b), (a, b)
    history_a, history_b, *_ = client.predict("3+4は？", [], [], "zoo:evollm", "zoo:math", "model default", 1, 32,
                                                1.0, api_name="/chat")
    assert _ok(history_a[1]["content"][0]["text"]) and _ok(history_b[1]["content"][0]["text"])


def test_twenty_concurrent_requests_all_complete(app, client):
    _, root = app
    image = handle_file(_image(root))

    def one(i: int) -> list[str]:
        if i % 2:
            h_a, h_b, *_ = client.predict(f"{i}+{i}は？", [], [], "tiny-math", "tiny-ja", "auto", 1, 8, 1.0,
                                            api_name="/chat")
            return [h_a[1]["content"][0]["text"], h_b[1]["content"][0]["text"]]
        return list(client.predict(image, f"{i}番目の質問です。", "tiny-llava", "tiny-llava-next", "model default",
                                   1, 8, 1.5, api_name="/image_qa")[1:3])

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert all(_ok(text) for pair in answers for text in pair), answers
    print(f"20 concurrent requests in {time.monotonic() - started:.1f} s")


# -- a real browser -------------------------------------------------------------------------------------------

def test_browser_image_qa_in_japanese(app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    url, root = app
    screenshot = Path(os.environ.get("EVOVLM_APP_SCREENSHOT") or tmp_path / "image-qa.png")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
            outside: list[str] = []  # the page must not call out (fonts, analytics, CDNs)
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#vqa-image input[type=file]").set_input_files(_image(root))
            page.locator("#vqa-image img").first.wait_for(timeout=20_000)  # the upload is shown
            question = page.locator("#vqa-question textarea")
            question.fill(JA_QUESTION)
            page.locator("#vqa-ask").click()
            page.locator("#vqa-status").get_by_text("✓").wait_for(timeout=60_000)
            answers = [page.locator(f"#vqa-answer-{c} textarea").input_value() for c in "ab"]
            assert all(_ok(text) for text in answers), answers
            assert question.input_value() == JA_QUESTION
            page.screenshot(path=str(screenshot), full_page=True)
            assert outside == [], outside
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")


# -- the default models, as a first-time visitor of a fresh Space sees them (issue 16) -------------------------

@pytest.fixture(scope="module")
def shipped_app(tmp_path_factory):
    """The app on its shipped models YAML (the zoo), with an empty runs folder: only what it bundles."""
    root = tmp_path_factory.mktemp("shipped")
    (root / "runs").mkdir()
    with running_app(root, "--runs-dir", str(root / "runs")) as url:
        yield url, root


def _browser(sync_api, playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=["--no-sandbox", "--disable-gpu"])


def _ask_first_example(page, tab: str, ask: str, question: str) -> None:
    page.locator(f"#{tab}-examples").locator("tr.tr-body, button.gallery-item").first.click()
    box = page.locator("#vqa-question textarea" if tab == "vqa" else "#chat-message textarea")
    page.wait_for_function("([box, text]) => document.querySelector(box)?.value === text",
                           arg=["#vqa-question textarea" if tab == "vqa" else "#chat-message textarea", question])
    if tab == "vqa":
        page.locator("#vqa-image img").first.wait_for(timeout=20_000)  # the example's image is in place
    assert box.input_value() == question
    page.locator(f"#{ask}").click()
    page.locator(f"#{tab}-status").get_by_text("✓").wait_for(timeout=60_000)


def test_browser_showcase_on_the_default_models(shipped_app, tmp_path):
    """Header, graded image-QA and chat examples, the bundled case study and run; screenshots at 1400 and 400 px."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    from evovlm.app.config import load_config
    from evovlm.app.examples import benchmark_examples, grade
    from evovlm.plugins import load_plugins

    load_plugins()
    config = load_config()
    vqa_example = benchmark_examples(config.examples["vqa"], "vqa").examples[0]
    chat_example = benchmark_examples(config.examples["chat"], "chat").examples[0]
    evollm, math = (json_file(config.showcase.results[0].a), json_file(config.showcase.results[0].b))
    bundled_run = json_file(str(Path(config.showcase.runs) / "zoo-ps" / "summary.json"))
    url, _ = shipped_app
    shots = Path(os.environ.get("EVOVLM_APP_SCREENSHOT_DIR") or tmp_path)
    with sync_api.sync_playwright() as playwright:
        browser = _browser(sync_api, playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
            page.goto(url, wait_until="domcontentloaded")
            header = page.locator("#showcase")
            header.wait_for(timeout=20_000)
            assert "zoo:evollm · evolved merge" in header.inner_text()
            assert f"acc_ja {evollm['summary']['acc_ja']:.1f}" in header.inner_text()
            # Image QA: the first example, graded under each column; A is the evolved merge.
            _ask_first_example(page, "vqa", "vqa-ask", vqa_example.question)
            assert "evolved merge" in page.locator("#vqa-answer-a").inner_text()
            answer_a = page.locator("#vqa-answer-a textarea").input_value()
            graded_a = page.locator("#vqa-grade-a").inner_text().strip()
            # Graded under its column exactly as the evaluator grades it, right or wrong.
            assert answer_a.strip() and graded_a == grade(vqa_example, answer_a), (answer_a, graded_a)
            print(f"image QA, first example {vqa_example.question!r}: A answered {answer_a!r}: {graded_a}")
            page.locator("#vqa-status", has_text="since your click, queue included").wait_for(timeout=10_000)
            status = page.locator("#vqa-status").inner_text()
            assert "A: first token" in status and "tokens/s" in status, status
            page.screenshot(path=str(shots / "showcase-1400-image-qa.png"), full_page=True)
            # Blind mode: the same pair in a random order, names hidden until the vote.
            page.locator("#vqa-blind input").check()
            before = page.locator("#vqa-status").inner_text()
            page.locator("#vqa-ask-blind").click()
            page.wait_for_function(  # the blind round's own final status, not the earlier one
                "(old) => { const s = document.querySelector('#vqa-status').innerText; return s !== old && "
                "s.startsWith('✓') && s.includes('queue included') && !s.includes('processing'); }",
                arg=before, timeout=60_000)
            assert "names shown after your vote" in page.locator("#vqa-answer-a").inner_text()
            page.locator("#vqa-vote-a").click()
            page.locator("#vqa-vote-message").get_by_text("Your votes this session").wait_for(timeout=10_000)
            page.locator("#vqa-answer-a", has_text="zoo:").wait_for(timeout=10_000)  # the name, once voted
            revealed = page.locator("#vqa-answer-a").inner_text()
            assert "zoo:evovlm" in revealed or "zoo:vlm" in revealed, revealed
            page.locator("#vqa-blind input").uncheck()
            # Chat: the evolved merge answers the first zoo-mgsm-ja example right, in Japanese.
            page.get_by_role("tab", name="チャット · Chat").click()
            _ask_first_example(page, "chat", "chat-send", chat_example.question)
            graded = page.locator("#chat-grade-a").inner_text()
            assert "✔ 正解 right" in graded and "日本語 Japanese ✔" in graded, graded
            assert "not Japanese" in page.locator("#chat-grade-b").inner_text()  # the math expert, in English
            assert chat_example.question in page.locator("#chat-a").inner_text()
            # Case studies: the bundled comparison, on load.
            page.get_by_role("tab", name="ケーススタディ · Case studies").click()
            summary = page.locator("#cases-summary")
            summary.get_by_text("acc_ja: A =").wait_for(timeout=30_000)
            expected = f"acc_ja: A = {evollm['summary']['acc_ja']:.2f}, B = {math['summary']['acc_ja']:.2f}"
            assert expected in summary.inner_text() and "A (zoo:evollm) right" in summary.inner_text()
            assert "zoo:evollm" in page.locator("#cases-response-a").inner_text()
            assert not page.locator("#cases-image").is_visible()  # a text benchmark: no image panel
            assert page.locator("#cases-histogram").is_visible()  # A − B per problem: +100 where only A is right
            page.locator("#cases-bundled input").click()  # the VLM comparison: its scenes are drawn again
            page.get_by_role("option", name="zoo-vqa-ja: evolved VLM vs source VLM").click()
            page.locator("#cases-summary", has_text="zoo:evovlm on zoo-vqa-ja").wait_for(timeout=30_000)
            page.locator("#cases-image img").wait_for(timeout=20_000)
            page.screenshot(path=str(shots / "showcase-1400-case-study.png"), full_page=True)
            # Evolution: the bundled run.
            page.get_by_role("tab", name="進化 · Evolution").click()
            page.locator("#run-summary").get_by_text("best fitness so far").wait_for(timeout=30_000)
            assert page.locator("#run-dir input").input_value() == "zoo-ps"  # the bundled run, no server path
            # the run's own held-out score, as its summary.json records it
            assert f"held-out test: {bundled_run['test']['fitness']:.1f}" in page.locator("#run-summary").inner_text()
            page.screenshot(path=str(shots / "showcase-1400-evolution.png"), full_page=True)
            # A phone: the answers come before the examples, and the page scrolls to them on "Ask".
            phone = browser.new_page(viewport={"width": 400, "height": 850}, locale="ja-JP")
            phone.goto(url, wait_until="domcontentloaded")
            phone.locator("#showcase").wait_for(timeout=20_000)
            # Gradio renders the tab strip after the header: wait for it (CI once counted 0 tabs, a race).
            phone.get_by_role("tab", name="進化 · Evolution").wait_for(timeout=20_000)
            tabs = phone.get_by_role("tab").all()  # all five in sight (wrapped), none behind a "more" menu
            assert len(tabs) == 5 and all(tab.is_visible() for tab in tabs)
            _ask_first_example(phone, "vqa", "vqa-ask", vqa_example.question)
            answers, examples = (phone.locator(f"#{name}").bounding_box() for name in ("vqa-answers", "vqa-examples"))
            assert answers["y"] < examples["y"], (answers, examples)
            phone.screenshot(path=str(shots / "showcase-400-image-qa.png"), full_page=True)
        finally:
            browser.close()
    for name in ("showcase-1400-image-qa.png", "showcase-1400-case-study.png", "showcase-1400-evolution.png",
                 "showcase-400-image-qa.png"):
        assert (shots / name).stat().st_size > 10_000
    print(f"screenshots in {shots}")


def json_file(path: str) -> dict:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))
