"""The Gradio Blocks: four tabs over :class:`Demo`, which holds the handlers (testable without a browser).

Public API endpoints (for ``gradio_client``): ``/image_qa``, ``/chat``, ``/cases``, ``/run``,
``/list_runs``, ``/models``. Generation endpoints share one queue concurrency group sized for the
device; the light ones (case studies, runs) have their own, so browsing stays responsive while
models generate.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr

from evovlm.app import cases as case_lib
from evovlm.app import plots
from evovlm.app import runs as run_lib
from evovlm.app.cache import ModelCache
from evovlm.app.config import AppConfig, Limits, Registry
from evovlm.app.examples import DEFAULT_QUESTION, MGSM_STYLE, image_examples
from evovlm.app.generate import (
    AUTO,
    IMAGE_SUFFIXES,
    MODEL_DEFAULT,
    Decoding,
    Prompt,
    UserError,
    bounded_prompt,
    chat_prompt,
    check_question,
    load_image,
    merge_streams,
    stream,
    vqa_prompt,
)
from evovlm.eval import prompts

LOG = logging.getLogger("evovlm.app")
BEAM_NOTE = ("ビームサーチ (beams > 1) はストリーミングできません。回答は完成してから表示されます。  \n"
             "Beam search cannot stream in transformers: with beams > 1 each answer appears when complete.")
CSS = """
.answer textarea { font-size: 1.05rem; line-height: 1.6; }
footer { display: none !important; }
"""


class UploadedImage(gr.Image):
    """``gr.Image`` that hands over the uploaded file's path unopened.

    The stock component opens every upload with PIL before our code runs, so a non-image file or a
    decompression bomb would fail inside Gradio with a bare "Error". We open it ourselves, bounded
    (:func:`~evovlm.app.generate.load_image`), and answer with a message instead.
    """

    is_template = True  # rendered by the stock Image frontend

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        if getattr(payload, "path", None) and not str(getattr(payload, "url", "") or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


def message_text(content: Any) -> str:
    """A chat message's text, whether Gradio sent a string or typed content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def _is_pending(text: str) -> bool:
    return text.startswith(("…", "⚠"))


INTERNAL_ERROR = ("⚠ サーバーでエラーが発生しました (記録済み)。An unexpected error occurred on the server (it was "
                  "logged); nothing else changed.")


def guarded(message_at: int | None, outputs: int) -> Callable:
    """A handler that never raises: an unexpected error is logged and shown as a message in output
    ``message_at`` of its ``outputs`` (the others unchanged; None: no message), instead of Gradio's
    "The upstream Gradio app has raised an exception". Inputs are checked inside the handlers;
    this is the net."""
    def wrap(fn: Callable) -> Callable:
        def failed() -> tuple:
            LOG.exception("handler %s failed", fn.__name__)
            values = [gr.update()] * outputs
            if message_at is not None:
                values[message_at] = INTERNAL_ERROR
            return tuple(values)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Iterator:
                try:
                    yield from fn(*args, **kwargs)
                except Exception:
                    yield failed()
            return generator

        @functools.wraps(fn)
        def function(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception:
                return failed()
        return function
    return wrap


@dataclass
class Demo:
    config: AppConfig
    registry: Registry
    cache: ModelCache
    runs_roots: list[Path] = field(default_factory=list)
    allowed_roots: list[Path] = field(default_factory=list)

    @property
    def limits(self) -> Limits:
        return self.config.limits

    # -- one column ---------------------------------------------------------------------------------
    def _column(self, name: str, make_prompt: Callable[[Any], Prompt], decoding: Decoding,
                image: Any = None) -> Iterator[str]:
        if not name:
            yield "⚠ モデルを選んでください。Pick a model."
            return
        status = self.registry.status(name, recheck=True)
        if not status.ok:
            yield f"⚠ {name}: unavailable — {status.reason}"
            return
        if image is not None and self.registry.kind(name) != "vlm":
            yield f"⚠ {name} is a text-only model: it cannot answer questions about images."
            return
        entry = self.config.entry(name)
        if entry is not None and entry.max_new_tokens:
            decoding = replace(decoding, max_new_tokens=min(decoding.max_new_tokens, entry.max_new_tokens))
        if not self.cache.is_loaded(name):
            yield f"… {name} を読み込んでいます (loading the model)"
        with self.cache.use(name) as slot:
            if decoding.num_beams > 1:
                yield f"… ビームサーチ中 / beam search ({decoding.num_beams} beams): the answer appears when complete."
            else:
                yield "…"
            def bounded(runner: Any) -> Prompt:
                return bounded_prompt(runner, make_prompt(runner), decoding, self.limits)

            text = None
            for text in stream(slot, bounded, decoding, image):
                yield text
            if not text:
                yield "（空の回答 / empty answer）"

    def _template(self, name: str, chosen: str, task: str) -> str:
        if chosen and chosen != MODEL_DEFAULT:
            return chosen
        entry = self.config.entry(name)
        return (entry.template if entry and entry.template else None) or self.config.generation[task].template

    # -- image QA -----------------------------------------------------------------------------------
    @guarded(message_at=0, outputs=3)
    def image_qa(self, image: str | None, question: str, model_a: str, model_b: str, template: str,
                 num_beams: float, max_new_tokens: float, repetition_penalty: float) -> Iterator[tuple[str, str, str]]:
        started = time.perf_counter()
        try:
            text = check_question(question, self.limits)
            if not image:
                raise UserError("画像をアップロードするか、例を選んでください。"
                                "Please upload an image or pick an example.")
            picture, note = load_image(image, self.limits)
        except UserError as exc:
            yield f"⚠ {exc}", "", ""
            return
        decoding = Decoding.clamped(num_beams, max_new_tokens, repetition_penalty, self.limits)
        notes = [n for n in (note, BEAM_NOTE.split("  \n")[1] if decoding.num_beams > 1 else "") if n]
        status = "  \n".join(["生成中… / generating…", *notes])

        def column(name: str) -> Any:
            tpl = self._template(name, template, "vqa")
            return lambda: self._column(name, lambda runner: vqa_prompt(runner, text, tpl), decoding, picture)

        answers = ["", ""]
        for answers in merge_streams([column(model_a), column(model_b)], ["", ""]):
            yield status, answers[0], answers[1]
        done = f"✓ {time.perf_counter() - started:.1f} s"
        yield "  \n".join([done, *notes]), answers[0], answers[1]

    # -- chat ---------------------------------------------------------------------------------------
    def _conversation(self, history: list[dict], user: str) -> list[dict]:
        """The prompt's messages: completed turns only (failed ones dropped), the newest ones that fit
        in ``max_turns`` and ``max_prompt_chars`` (a history sent through the API can be anything)."""
        turns: list[tuple[str, str]] = []
        pending_user: str | None = None
        for message in (history or [])[-4 * self.limits.max_turns:]:
            role, text = message.get("role"), message_text(message.get("content"))
            if role == "user":
                pending_user = text
            elif role == "assistant" and pending_user is not None:
                if text and not _is_pending(text):
                    turns.append((pending_user, text))
                pending_user = None
        kept, budget = [], self.limits.max_prompt_chars - len(user)
        for u, a in reversed(turns[-(self.limits.max_turns - 1):] if self.limits.max_turns > 1 else []):
            budget -= len(u) + len(a)
            if budget < 0:
                break
            kept.insert(0, (u, a))
        messages: list[dict] = []
        for u, a in kept:
            messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        return messages + [{"role": "user", "content": user}]

    @guarded(message_at=3, outputs=4)
    def chat(self, message: str, history_a: list | None, history_b: list | None, model_a: str, model_b: str,
             template: str, num_beams: float, max_new_tokens: float, repetition_penalty: float
             ) -> Iterator[tuple[list, list, str, str]]:
        histories = [[{"role": m.get("role"), "content": message_text(m.get("content"))} for m in (h or [])
                      if isinstance(m, dict)] for h in (history_a, history_b)]
        try:
            text = check_question(message, self.limits)
        except UserError as exc:
            yield histories[0], histories[1], message or "", f"⚠ {exc}"
            return
        decoding = Decoding.clamped(num_beams, max_new_tokens, repetition_penalty, self.limits)
        started = time.perf_counter()

        def column(index: int, name: str) -> Any:
            conversation = self._conversation(histories[index], text)
            tpl = self._template(name, template, "chat")
            return lambda: self._column(name, lambda runner: chat_prompt(runner, conversation, tpl), decoding)

        streams = [column(0, model_a), column(1, model_b)]
        for h in histories:
            h += [{"role": "user", "content": text}, {"role": "assistant", "content": "…"}]
        for answers in merge_streams(streams, ["…", "…"]):
            for h, answer in zip(histories, answers):
                h[-1] = {"role": "assistant", "content": answer}
            yield histories[0], histories[1], "", "生成中… / generating…"
        yield histories[0], histories[1], "", f"✓ {time.perf_counter() - started:.1f} s"

    # -- case studies ---------------------------------------------------------------------------------
    def _allowed(self, path: Path) -> bool:
        try:
            resolved = path.resolve()
        except OSError:
            return False
        return any(resolved.is_relative_to(root) for root in self.allowed_roots)

    def _case_image(self, ref: Any, results_path: str) -> Any:
        if not isinstance(ref, str) or not ref:
            return None
        path = Path(ref)
        if not path.is_absolute():
            path = Path(results_path).parent / path
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            return None
        if not self._allowed(path) and not self._allowed(Path(ref)):
            return None
        try:
            return load_image(str(path), self.limits)[0]
        except UserError:
            return None

    @guarded(message_at=0, outputs=10)
    def cases(self, file_a: str | None, file_b: str | None, metric: str | None, which: str, sort: str,
              search: str, position: float | None) -> tuple:
        empty = (gr.update(), [], 0, None, "", "", "", "", "")
        if not file_a and not file_b:
            return ("`evovlm eval --out results.json` で作った結果ファイルを読み込んでください。"
                    "Load one or two results files written by `evovlm eval`.", *empty)
        try:
            a = case_lib.read_results(file_a or file_b)
            b = case_lib.read_results(file_b) if file_a and file_b else None
        except UserError as exc:
            return (f"⚠ {exc}", *empty)
        choices = case_lib.metric_choices(a, b)
        metric = metric if metric in choices else (choices[0] if choices else "")
        paired = case_lib.pair(a, b, metric)
        shown = case_lib.select(paired, which or "all", sort or case_lib.SORTS[0], search or "")
        summary = case_lib.summary_markdown(a, b, paired, len(shown), metric)
        metric_update = gr.update(choices=choices, value=metric)
        rows = case_lib.table(shown)
        if not shown:
            return (summary, metric_update, rows, 0, None, "", "", "", "", "no sample matches")
        pos = int(min(max(position or 0, 0), len(shown) - 1))
        case = shown[pos]
        response_b = str(case.b.get("response") or "") if case.b else ""
        image = self._case_image(case.image, a.path)
        detail = case_lib.detail_markdown(case, metric, a, b)
        if image is None and case.image:  # a dataset reference, or a file this app may not show
            detail += f"\n\nimage: `{case.image}` (not shown here)"
        return (summary, metric_update, rows, pos, image, case.question, case.reference,
                str(case.a.get("response") or ""), response_b, detail)

    # -- evolution ------------------------------------------------------------------------------------
    def list_runs(self) -> Any:
        return gr.update(choices=run_lib.find_runs(self.runs_roots))

    @guarded(message_at=0, outputs=6)
    def run(self, run_dir: str | None) -> tuple:
        blank = (None, None, None, [], "")
        if not run_dir or not str(run_dir).strip():
            return ("Pick or type a run directory of `evovlm evolve`.", *blank)
        if "\0" in str(run_dir) or len(str(run_dir)) > 4096:
            return ("⚠ That is not a folder name.", *blank)
        path = Path(str(run_dir).strip()).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not any(path.resolve().is_relative_to(r) for r in self.runs_roots):
            roots = ", ".join(f"`{r}`" for r in self.runs_roots)
            return (f"⚠ `{run_dir}` is outside the run folders this app may read ({roots}); start it with "
                    "`--runs-dir`.", *blank)
        if not path.is_dir():
            return (f"⚠ `{run_dir}` is not a directory.", *blank)
        run = run_lib.read_run(path)
        return (run_lib.summary_markdown(run), plots.fitness_plot(run), plots.heatmap_plot(run),
                plots.dfs_plot(run), run_lib.scores_table(run), run.recipe_text)

    # -- models ---------------------------------------------------------------------------------------
    @guarded(message_at=None, outputs=5)
    def models(self) -> tuple:
        self.registry.refresh()
        return (self.registry.table(),
                *(gr.update(choices=self.registry.choices(t)) for t in ("vqa", "vqa", "chat", "chat")))


@dataclass(frozen=True)
class _Layout:
    """What every tab's builder needs: the app, its limits, and the event queues."""

    demo: Demo
    templates: list[str]
    gen_queue: dict
    light: dict = field(default_factory=lambda: {"concurrency_limit": 8, "concurrency_id": "browse"})
    ui_only: dict = field(default_factory=lambda: {"api_visibility": "private", "queue": False})

    def settings(self, defaults: Any) -> tuple:
        lim = self.demo.config.limits
        with gr.Accordion("詳細設定 / advanced generation settings", open=False):
            template = gr.Dropdown(self.templates, value=MODEL_DEFAULT, label="prompt template",
                                   info=f"model default: the model's own template, else {defaults.template}; "
                                        "auto: the tokenizer's chat template, else ja-alpaca-cot")
            beams = gr.Slider(1, lim.max_beams, value=min(defaults.num_beams, lim.max_beams), step=1, label="beams")
            tokens = gr.Slider(1, lim.max_new_tokens, value=min(defaults.max_new_tokens, lim.max_new_tokens), step=1,
                               label="max new tokens")
            penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="repetition penalty")
            gr.Markdown(BEAM_NOTE)
        return template, beams, tokens, penalty


def build(demo: Demo, *, concurrency: int) -> gr.Blocks:
    # "model default": the model's own template from the models YAML, else the tab's (the paper's)
    templates = [MODEL_DEFAULT, AUTO, *(name for name in prompts.template_names() if name != prompts.CHAT)]
    layout = _Layout(demo, templates, {"concurrency_limit": concurrency, "concurrency_id": "generate"})
    # delete_cache: uploads older than an hour go, so a public Space does not fill its disk.
    with gr.Blocks(title="EvoVLM demo", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown("## EvoVLM — evolutionary model merging demo  \n"
                    "Two models side by side: an evolved merge and its sources "
                    "([Akiba et al. 2024](https://arxiv.org/abs/2403.13187)).")
        with gr.Tabs():
            vqa_models = _image_qa_tab(layout)
            chat_models = _chat_tab(layout)
            _cases_tab(layout)
            _evolution_tab(layout, blocks)
            _models_tab(layout, [*vqa_models, *chat_models])
    return blocks


def _model_pair(registry: Any, kind: str) -> tuple:
    """The A and B model dropdowns of a tab (``kind`` vqa or chat), set to the default pair."""
    return tuple(gr.Dropdown(registry.choices(kind), value=value, label=f"model {side}",
                             elem_id=f"{kind}-model-{side.lower()}")
                 for side, value in zip("AB", registry.default_pair(kind)))


def _image_qa_tab(layout: _Layout) -> tuple:
    """The image QA tab; returns its two model dropdowns."""
    demo, lim, gen_queue, ui_only = layout.demo, layout.demo.config.limits, layout.gen_queue, layout.ui_only
    with gr.Tab("画像QA · Image QA", id="vqa"):
        with gr.Row():
            with gr.Column(scale=2):
                image = UploadedImage(label="画像 / image", type="filepath", sources=["upload", "clipboard"],
                                      height=280, elem_id="vqa-image")
                question = gr.Textbox(DEFAULT_QUESTION, label="質問 / question", lines=2,
                                      max_length=lim.max_question_chars, elem_id="vqa-question")
                with gr.Row():
                    model_a, model_b = _model_pair(demo.registry, "vqa")
                vqa_settings = layout.settings(demo.config.generation["vqa"])
                ask = gr.Button("質問する / Ask", variant="primary", elem_id="vqa-ask")
                gr.Examples(image_examples(), inputs=[image, question], label="例 / examples")
            with gr.Column(scale=3):
                vqa_status = gr.Markdown(elem_id="vqa-status")
                with gr.Row():
                    answer_a = gr.Textbox(label=f"A: {model_a.value}", lines=14, interactive=False,
                                          elem_id="vqa-answer-a", elem_classes="answer", buttons=["copy"])
                    answer_b = gr.Textbox(label=f"B: {model_b.value}", lines=14, interactive=False,
                                          elem_id="vqa-answer-b", elem_classes="answer", buttons=["copy"])
        vqa_inputs = [image, question, model_a, model_b, *vqa_settings]
        ask.click(demo.image_qa, vqa_inputs, [vqa_status, answer_a, answer_b], api_name="image_qa", **gen_queue)
        question.submit(demo.image_qa, vqa_inputs, [vqa_status, answer_a, answer_b],
                        api_visibility="private", **gen_queue)
        model_a.change(lambda n: gr.update(label=f"A: {n}"), model_a, answer_a, **ui_only)
        model_b.change(lambda n: gr.update(label=f"B: {n}"), model_b, answer_b, **ui_only)
    return model_a, model_b


def _chat_tab(layout: _Layout) -> tuple:
    """The chat tab; returns its two model dropdowns."""
    demo, lim, gen_queue, ui_only = layout.demo, layout.demo.config.limits, layout.gen_queue, layout.ui_only
    with gr.Tab("チャット · Chat", id="chat"):
        with gr.Row():
            chat_model_a, chat_model_b = _model_pair(demo.registry, "chat")
        with gr.Row():
            history_a = gr.Chatbot(label=f"A: {chat_model_a.value}", height=380, elem_id="chat-a")
            history_b = gr.Chatbot(label=f"B: {chat_model_b.value}", height=380, elem_id="chat-b")
        chat_status = gr.Markdown()
        with gr.Row():
            message = gr.Textbox(placeholder="メッセージ / message", show_label=False, scale=5,
                                 max_length=lim.max_question_chars, elem_id="chat-message")
            send = gr.Button("送信 / Send", variant="primary", scale=1)
            clear = gr.Button("クリア / Clear", scale=1)
        chat_settings = layout.settings(demo.config.generation["chat"])
        gr.Examples([[q] for q in MGSM_STYLE], inputs=[message], label="MGSM 形式の例 / MGSM-style examples")
        chat_inputs = [message, history_a, history_b, chat_model_a, chat_model_b, *chat_settings]
        chat_outputs = [history_a, history_b, message, chat_status]
        send.click(demo.chat, chat_inputs, chat_outputs, api_name="chat", **gen_queue)
        message.submit(demo.chat, chat_inputs, chat_outputs, api_visibility="private", **gen_queue)
        clear.click(lambda: ([], [], ""), None, [history_a, history_b, chat_status], **ui_only)
        chat_model_a.change(lambda n: gr.update(label=f"A: {n}"), chat_model_a, history_a, **ui_only)
        chat_model_b.change(lambda n: gr.update(label=f"B: {n}"), chat_model_b, history_b, **ui_only)
    return chat_model_a, chat_model_b


def _cases_tab(layout: _Layout) -> None:
    """Results files side by side, sample by sample."""
    demo, light, ui_only = layout.demo, layout.light, layout.ui_only
    with gr.Tab("ケーススタディ · Case studies", id="cases"):
        gr.Markdown("Results files from `evovlm eval --out FILE`: A alone, or A against B, sample by sample.")
        with gr.Row():
            file_a = gr.File(label="results A (.json)", file_types=[".json"], elem_id="cases-file-a")
            file_b = gr.File(label="results B (.json, optional)", file_types=[".json"], elem_id="cases-file-b")
        with gr.Row():
            metric = gr.Dropdown([], label="per-sample metric", allow_custom_value=True)
            which = gr.Radio(case_lib.FILTERS, value="all", label="filter")
            sort = gr.Dropdown(case_lib.SORTS, value=case_lib.SORTS[0], label="sort")
            search = gr.Textbox(label="search", placeholder="question, reference or response text")
        case_summary = gr.Markdown()
        case_table = gr.Dataframe(headers=case_lib.TABLE_HEADERS, interactive=False, wrap=True, max_height=320)
        with gr.Row():
            prev_case = gr.Button("◀ previous")
            position = gr.Number(0, label="position in the list", precision=0, minimum=0)
            next_case = gr.Button("next ▶")
        with gr.Row():
            case_image = gr.Image(label="image", type="pil", interactive=False, height=260)
            with gr.Column():
                case_question = gr.Textbox(label="question", interactive=False)
                case_reference = gr.Textbox(label="reference", interactive=False)
        with gr.Row():
            case_resp_a = gr.Textbox(label="response A", lines=6, interactive=False)
            case_resp_b = gr.Textbox(label="response B", lines=6, interactive=False)
        case_detail = gr.Markdown()
        case_inputs = [file_a, file_b, metric, which, sort, search, position]
        case_outputs = [case_summary, metric, case_table, position, case_image, case_question, case_reference,
                        case_resp_a, case_resp_b, case_detail]
        load_cases = {"fn": demo.cases, "inputs": case_inputs, "outputs": case_outputs}
        file_a.change(**load_cases, api_name="cases", **light)
        for trigger in (file_b.change, metric.input, which.change, sort.change, search.submit):
            trigger(**load_cases, api_visibility="private", **light)
        prev_case.click(lambda p: max(int(p or 0) - 1, 0), position, position, **ui_only).then(
            **load_cases, api_visibility="private", **light)
        next_case.click(lambda p: int(p or 0) + 1, position, position, **ui_only).then(
            **load_cases, api_visibility="private", **light)
        position.submit(**load_cases, api_visibility="private", **light)

        def pick(evt: gr.SelectData) -> int:
            return int(evt.index[0]) if isinstance(evt.index, (list, tuple)) else int(evt.index)

        case_table.select(pick, None, position, **ui_only).then(**load_cases, api_visibility="private", **light)


def _evolution_tab(layout: _Layout, blocks: gr.Blocks) -> None:
    """An evolution run's fitness, recipe and layer path, optionally refreshed live."""
    demo, light, ui_only = layout.demo, layout.light, layout.ui_only
    with gr.Tab("進化 · Evolution", id="evolution"):
        runs_found = run_lib.find_runs(demo.runs_roots)
        with gr.Row():
            run_dir = gr.Dropdown(runs_found, value=runs_found[0] if runs_found else None,
                                  allow_custom_value=True, label="run directory (evovlm evolve --out)", scale=4)
            rescan = gr.Button("find runs", scale=1)
            refresh = gr.Button("⟳ refresh", variant="primary", scale=1)
            live = gr.Checkbox(False, label="auto-refresh (5 s)", scale=1)
        run_summary = gr.Markdown()
        with gr.Row():
            curve = gr.Image(label="fitness", type="pil", interactive=False)
            scores = gr.Dataframe(headers=["model", "note", "score"], interactive=False,
                                  label="starting model, best, validation and test scores")
        heatmap = gr.Image(label="best recipe: weights and densities", type="pil", interactive=False)
        dfs = gr.Image(label="DFS layer path", type="pil", interactive=False)
        recipe = gr.Code(label="best recipe", language="yaml", interactive=False)
        run_outputs = [run_summary, curve, heatmap, dfs, scores, recipe]
        refresh.click(demo.run, run_dir, run_outputs, api_name="run", **light)
        run_dir.change(demo.run, run_dir, run_outputs, api_visibility="private", **light)
        rescan.click(demo.list_runs, None, run_dir, api_name="list_runs", **light)
        timer = gr.Timer(5.0, active=False)
        timer.tick(demo.run, run_dir, run_outputs, api_visibility="private", show_progress="hidden", **light)
        live.change(lambda on: gr.Timer(active=bool(on)), live, timer, **ui_only)
        if runs_found:  # show the newest-listed run straight away
            blocks.load(demo.run, run_dir, run_outputs, api_visibility="private", **light)


def _models_tab(layout: _Layout, dropdowns: list) -> None:
    """The models YAML's entries and whether each is available; a re-check updates every dropdown."""
    demo, light = layout.demo, layout.light
    cfg, reg = demo.config, demo.registry
    with gr.Tab("モデル · Models", id="models"):
        gr.Markdown(f"From `{cfg.source}`. At most {demo.cache.max_resident} models stay loaded "
                    "(least recently used evicted first).")
        model_table = gr.Dataframe(reg.table(), headers=["name", "kind", "ref", "status", "path or reason",
                                                         "description"], interactive=False, wrap=True)
        recheck = gr.Button("⟳ re-check availability")
        recheck.click(demo.models, None, [model_table, *dropdowns], api_name="models", **light)
