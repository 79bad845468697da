"""The Gradio Blocks: four tabs over :class:`Demo`, which holds the handlers (testable without a browser).

Public API endpoints (for ``gradio_client``): ``/image_qa``, ``/chat``, ``/cases``, ``/run``,
``/list_runs``, ``/models``. Generation endpoints share one queue concurrency group sized for the
device; the light ones (case studies, runs) have their own, so browsing stays responsive while
models generate.
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr

from evovlm.app import blind, plots
from evovlm.app import cases as case_lib
from evovlm.app import runs as run_lib
from evovlm.app.cache import ModelCache
from evovlm.app.config import AppConfig, Limits, Registry, public_reason
from evovlm.app.examples import DEFAULT_QUESTION, ExampleSet, benchmark_examples, builtin_examples, grade
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
from evovlm.app.showcase import header_markdown
from evovlm.eval import prompts
from evovlm.eval.benchmarks import image_from_ref

LOG = logging.getLogger("evovlm.app")
BEAM_NOTE = ("ビームサーチ (beams > 1) はストリーミングできません。回答は完成してから表示されます。  \n"
             "Beam search cannot stream in transformers: with beams > 1 each answer appears when complete.")
CSS = """
.answer textarea { font-size: 1.05rem; line-height: 1.6; }
footer { display: none !important; }
"""
# On "Ask": note the time in the browser and scroll to the answers (on a phone they are below the inputs).
# Runs in the browser before the request is sent, and passes the inputs on unchanged.
SCROLL_TO = ("(...inputs) => {{ window.evovlmAsked = performance.now(); "
             "document.getElementById('{}')?.scrollIntoView({{behavior: 'smooth', block: 'start'}}); return inputs; }}")
# When the answers are complete: the time since the click, queue included (the server sees only its own part).
WITH_QUEUE = ("(status) => (window.evovlmAsked && typeof status === 'string' && status.startsWith('✓ ')) ? "
              "status.replace(/^✓ [0-9.]+ s/, (m) => m + ' (' + ((performance.now() - window.evovlmAsked) / 1000)"
              ".toFixed(1) + ' s since your click, queue included)') : status")


class UploadedImage(gr.Image):
    """``gr.Image`` that hands over the uploaded file's path (a pasted ``data:`` image: its bytes) unopened.

    The stock component opens every upload with PIL before our code runs, so a non-image file or a
    decompression bomb would fail inside Gradio with a bare "Error". We open it ourselves, bounded
    (:func:`~evovlm.app.generate.load_image`), and answer with a message instead.
    """

    is_template = True  # rendered by the stock Image frontend

    def preprocess(self, payload: Any) -> Any:
        if payload is None:
            return None
        url = str(getattr(payload, "url", "") or "")
        if url.startswith("data:"):  # pasted data: its bytes, opened (bounded) by load_image like any upload
            try:
                return io.BytesIO(base64.b64decode(url.partition(",")[2]))
            except (binascii.Error, ValueError):
                return io.BytesIO()  # not base64: load_image says it is no readable image
        if getattr(payload, "path", None):
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
    examples: dict[str, ExampleSet] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for task in ("vqa", "chat"):
            if task not in self.examples:
                source = self.config.examples.get(task)
                found = benchmark_examples(source, task) if source is not None else None
                self.examples[task] = found or builtin_examples(task)

    @property
    def limits(self) -> Limits:
        return self.config.limits

    # -- one column ---------------------------------------------------------------------------------
    def _column(self, name: str, make_prompt: Callable[[Any], Prompt], decoding: Decoding,
                image: Any = None, timing: dict | None = None) -> Iterator[str]:
        """One model's growing answer; ``timing`` receives its first-token delay, seconds and tokens."""
        if not name:
            yield "⚠ モデルを選んでください。Pick a model."
            return
        status = self.registry.status(name, recheck=True)
        if not status.ok:
            yield f"⚠ {name}: unavailable — {public_reason(status.reason)}"
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

            text, started, first = None, time.perf_counter(), None
            answer = stream(slot, bounded, decoding, image)
            try:
                for text in answer:
                    first = first if first is not None else time.perf_counter() - started
                    text, ended = _ended(text, entry.stop_after if entry is not None else [])
                    yield text
                    if ended:
                        break
            finally:
                answer.close()  # stops the generation now when the answer ended early
            if not text:
                yield "（空の回答 / empty answer）"
            elif timing is not None:
                timing.update(first=first, seconds=time.perf_counter() - started, tokens=_tokens(slot.runner, text))

    def _timings(self, started: float, timings: list[dict]) -> str:
        """"✓ 1.2 s · A: first token 0.10 s, 85 tokens/s · B: ...", for the columns that answered."""
        parts = [f"✓ {time.perf_counter() - started:.1f} s"]
        for side, timing in zip("AB", timings):
            if timing.get("seconds"):
                rate = f", {timing['tokens'] / timing['seconds']:.0f} tokens/s" if timing.get("tokens") else ""
                parts.append(f"{side}: first token {timing['first']:.2f} s{rate}")
        return " · ".join(parts)

    def _template(self, name: str, chosen: str, task: str) -> str:
        if chosen and chosen != MODEL_DEFAULT:
            return chosen
        entry = self.config.entry(name)
        return (entry.template if entry and entry.template else None) or self.config.generation[task].template

    # -- image QA -----------------------------------------------------------------------------------
    @guarded(message_at=0, outputs=5)
    def image_qa(self, image: str | io.BytesIO | None, question: str, model_a: str, model_b: str, template: str,
                 num_beams: float, max_new_tokens: float, repetition_penalty: float) -> Iterator[tuple]:
        """(status, answer A, answer B, grade A, grade B); an example's answers are graded against its reference."""
        started = time.perf_counter()
        try:
            text = check_question(question, self.limits)
            if not image:
                raise UserError("画像をアップロードするか、例を選んでください。"
                                "Please upload an image or pick an example.")
            picture, note = load_image(image, self.limits)
        except UserError as exc:
            yield f"⚠ {exc}", "", "", "", ""
            return
        decoding = Decoding.clamped(num_beams, max_new_tokens, repetition_penalty, self.limits)
        notes = [n for n in (note, BEAM_NOTE.split("  \n")[1] if decoding.num_beams > 1 else "") if n]
        status = "  \n".join(["生成中… / generating…", *notes])

        timings: list[dict] = [{}, {}]

        def column(name: str, timing: dict) -> Any:
            tpl = self._template(name, template, "vqa")
            return lambda: self._column(name, lambda runner: vqa_prompt(runner, text, tpl), decoding, picture, timing)

        answers = ["", ""]
        for answers in merge_streams([column(model_a, timings[0]), column(model_b, timings[1])], ["", ""]):
            yield status, answers[0], answers[1], "", ""
        example = self.examples["vqa"].find(text, image)
        yield ("  \n".join([self._timings(started, timings), *notes]), answers[0], answers[1],
               grade(example, answers[0]), grade(example, answers[1]))

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

    @guarded(message_at=3, outputs=6)
    def chat(self, message: str, history_a: list | None, history_b: list | None, model_a: str, model_b: str,
             template: str, num_beams: float, max_new_tokens: float, repetition_penalty: float
             ) -> Iterator[tuple[list, list, str, str, str, str]]:
        """(history A, history B, message box, status, grade A, grade B). A single-turn model gets no history."""
        histories = [[{"role": m.get("role"), "content": message_text(m.get("content"))} for m in (h or [])
                      if isinstance(m, dict)] for h in (history_a, history_b)]
        try:
            text = check_question(message, self.limits)
        except UserError as exc:
            yield histories[0], histories[1], message or "", f"⚠ {exc}", "", ""
            return
        decoding = Decoding.clamped(num_beams, max_new_tokens, repetition_penalty, self.limits)
        started = time.perf_counter()
        timings: list[dict] = [{}, {}]
        single = [name for name in (model_a, model_b) if (entry := self.config.entry(name)) and entry.single_turn]
        note = (f"{', '.join(dict.fromkeys(single))}: single-turn (trained on one question at a time): "
                "earlier turns are not sent" if single and any(histories) else "")

        def column(index: int, name: str) -> Any:
            entry = self.config.entry(name)
            earlier = [] if entry is not None and entry.single_turn else histories[index]
            conversation = self._conversation(earlier, text)
            tpl = self._template(name, template, "chat")
            return lambda: self._column(name, lambda runner: chat_prompt(runner, conversation, tpl), decoding,
                                        timing=timings[index])

        streams = [column(0, model_a), column(1, model_b)]
        for h in histories:
            h += [{"role": "user", "content": text}, {"role": "assistant", "content": "…"}]
        answers = ["…", "…"]
        for answers in merge_streams(streams, answers):
            for h, answer in zip(histories, answers):
                h[-1] = {"role": "assistant", "content": answer}
            yield histories[0], histories[1], "", "  \n".join(["生成中… / generating…", note]), "", ""
        example = self.examples["chat"].find(text)
        yield (histories[0], histories[1], "", "  \n".join(filter(None, [self._timings(started, timings), note])),
               grade(example, answers[0]), grade(example, answers[1]))

    # -- blind rounds (Arena style) -------------------------------------------------------------------
    def blind_round(self, task: str, blind_on: bool, round_state: dict | None, *args: Any) -> Iterator[tuple]:
        """The tab's handler from the UI: in blind mode the pair answers in a random column order, labels
        hidden; else as :meth:`image_qa` / :meth:`chat`. Yields the handler's outputs, then the round state."""
        handler = self.image_qa if task == "vqa" else self.chat
        first_model = 2 if task == "vqa" else 3  # where model A sits among the handler's inputs
        args = list(args)
        if not blind_on:
            for out in handler(*args):
                yield (*out, round_state)
            return
        ongoing = task == "chat" and bool(args[1] or args[2])  # a conversation keeps its order
        state = blind.new_round(args[first_model], args[first_model + 1], round_state, keep=ongoing)
        args[first_model:first_model + 2] = state["order"]
        hidden = blind.labels(self.config, state, revealed=False)
        columns = (1, 2) if task == "vqa" else (0, 1)  # the outputs holding the two answers
        for step, out in enumerate(handler(*args)):
            out = list(out)
            if step == 0:  # hidden once: a vote cast while the answers still stream shows the names
                for column, label in zip(columns, hidden):
                    out[column] = gr.update(value=out[column], label=label)
            yield (*out, state)

    def cast_vote(self, choice: str, round_state: dict | None, tally: dict | None) -> tuple:
        """(label A, label B, message, round state, tally): the names are shown once the vote is in."""
        state, tally, message = blind.vote(choice, round_state, tally)
        label_a, label_b = blind.labels(self.config, state, revealed=bool(state and state.get("voted")))
        return (gr.update(label=label_a), gr.update(label=label_b),
                "  \n".join(filter(None, [message, blind.tally_markdown(tally)])), state, tally)

    # -- case studies ---------------------------------------------------------------------------------
    def _allowed(self, path: Path) -> bool:
        try:
            resolved = path.resolve()
        except OSError:
            return False
        return any(resolved.is_relative_to(root) for root in self.allowed_roots)

    def _case_image(self, ref: Any, results_path: str) -> Any:
        """The image of a case: a file the app may show, or one a benchmark draws from its reference."""
        if not isinstance(ref, str) or not ref:
            return None
        drawn = image_from_ref(ref)
        if drawn is not None:
            return drawn
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

    @guarded(message_at=0, outputs=11)
    def cases(self, file_a: str | None, file_b: str | None, metric: str | None, which: str, sort: str,
              search: str, position: float | None) -> tuple:
        """(summary, metric menu, table, position, image, question, reference, response A, response B, detail,
        histogram of A − B over the paired samples)."""
        empty = (gr.update(), [], 0, gr.update(value=None, visible=False), "", "", "", "", "",
                 gr.update(value=None, visible=False))
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
        labels = [f"response A ({a.model})", f"response B ({b.model})" if b else "response B"]
        histogram = gr.update(value=case_lib.difference_histogram(paired), visible=b is not None,
                              label=f"{metric}: A ({a.model}) − B ({b.model}) per sample" if b else "")
        if not shown:
            return (summary, metric_update, rows, 0, gr.update(value=None, visible=False), "", "",
                    gr.update(value="", label=labels[0]), gr.update(value="", label=labels[1]), "no sample matches",
                    histogram)
        pos = int(min(max(position or 0, 0), len(shown) - 1))
        case = shown[pos]
        response_b = str(case.b.get("response") or "") if case.b else ""
        image = self._case_image(case.image, a.path)
        detail = case_lib.detail_markdown(case, metric, a, b)
        if image is None and case.image:  # a dataset reference, or a file this app may not show
            detail += f"\n\nimage: `{case.image}` (not shown here)"
        return (summary, metric_update, rows, pos, gr.update(value=image, visible=image is not None), case.question,
                case.reference, gr.update(value=str(case.a.get("response") or ""), label=labels[0]),
                gr.update(value=response_b, label=labels[1]), detail, histogram)

    # -- evolution ------------------------------------------------------------------------------------
    def run_choices(self) -> list[tuple[str, str]]:
        """(label, folder) of every run, newest first; the label is the folder under its runs root (no server
        paths on a public Space)."""
        def label(folder: str) -> str:
            root = next((r for r in self.runs_roots if Path(folder).is_relative_to(r)), None)
            return str(Path(folder).relative_to(root)) if root and Path(folder) != root else Path(folder).name
        return [(label(folder), folder) for folder in run_lib.find_runs(self.runs_roots)]

    def list_runs(self) -> Any:
        return gr.update(choices=self.run_choices())

    @guarded(message_at=0, outputs=6)
    def run(self, run_dir: str | None) -> tuple:
        blank = (None, None, None, [], "")
        if not run_dir or not str(run_dir).strip():
            return ("Pick or type a run directory of `evovlm evolve`.", *blank)
        if "\0" in str(run_dir) or len(str(run_dir)) > 4096:
            return ("⚠ That is not a folder name.", *blank)
        try:  # a symlink loop, ~nosuchuser, a name longer than the file system allows: a message
            path = Path(str(run_dir).strip()).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            inside = any(path.resolve().is_relative_to(r) for r in self.runs_roots)
            is_dir = inside and path.is_dir()
        except (OSError, RuntimeError):
            return (f"⚠ `{run_dir}` cannot be opened as a folder.", *blank)
        if not inside:
            roots = ", ".join(f"`{r}`" for r in self.runs_roots)
            return (f"⚠ `{run_dir}` is outside the run folders this app may read ({roots}); start it with "
                    "`--runs-dir`.", *blank)
        if not is_dir:
            return (f"⚠ `{run_dir}` is not a directory.", *blank)
        run = run_lib.read_run(path)
        heatmap, dfs = plots.heatmap_plot(run), plots.dfs_plot(run)  # a stage the run lacks: no empty panel
        return (run_lib.summary_markdown(run), plots.fitness_frame(run),
                gr.update(value=heatmap, visible=heatmap is not None), gr.update(value=dfs, visible=dfs is not None),
                run_lib.scores_table(run), run.recipe_text)

    # -- models ---------------------------------------------------------------------------------------
    @guarded(message_at=None, outputs=5)
    def model_rows(self) -> list[list[str]]:
        """The Models tab's table, without server paths (``--check`` on the command line shows them)."""
        return [[name, kind, public_reason(ref), state, public_reason(detail), description]
                for name, kind, ref, state, detail, description in self.registry.table()]

    def models(self) -> tuple:
        self.registry.refresh()
        return (self.model_rows(),
                *(gr.update(choices=self.registry.choices(t)) for t in ("vqa", "vqa", "chat", "chat")))


def _ended(text: str, stop_after: list[str]) -> tuple[str, bool]:
    """``text`` up to and including the first of ``stop_after`` (and whether one occurred)."""
    ends = [text.find(stop) + len(stop) for stop in stop_after if stop in text]
    return (text[:min(ends)], True) if ends else (text, False)


def _tokens(runner: Any, text: str) -> int | None:
    """How many tokens ``text`` is for this model (None if its tokenizer cannot say)."""
    tokenizer = getattr(runner, "tokenizer", None)
    try:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    except Exception:  # a processor without a plain tokenizer: tokens/s is left out
        return None


@dataclass(frozen=True)
class _Layout:
    """What every tab's builder needs: the app, its limits, and the event queues."""

    demo: Demo
    templates: list[str]
    gen_queue: dict
    tally: Any = None  # the session's blind votes (a gr.State shared by the tabs)
    light: dict = field(default_factory=lambda: {"concurrency_limit": 8, "concurrency_id": "browse"})
    ui_only: dict = field(default_factory=lambda: {"api_visibility": "private", "queue": False})

    def settings(self, defaults: Any) -> tuple:
        lim = self.demo.config.limits
        with gr.Accordion("詳細設定 / advanced generation settings", open=False):
            gr.Markdown("Set to model A's own settings when it is picked (the zoo's: greedy, no repetition "
                        "penalty, 40 tokens; the paper's for the 7B models: 5 beams, penalty 1.5).")
            template = gr.Dropdown(self.templates, value=MODEL_DEFAULT, label="prompt template",
                                   info=f"model default: the model's own template, else {defaults.template}; "
                                        "auto: the tokenizer's chat template, else ja-alpaca-cot")
            beams = gr.Slider(1, lim.max_beams, value=min(defaults.num_beams, lim.max_beams), step=1, label="beams")
            tokens = gr.Slider(1, lim.max_new_tokens, value=min(defaults.max_new_tokens, lim.max_new_tokens), step=1,
                               label="max new tokens")
            penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="repetition penalty")
            gr.Markdown(BEAM_NOTE)
        return template, beams, tokens, penalty

    def follow_model_a(self, task: str, model_a: Any, settings: tuple) -> None:
        """Picking model A sets the sliders to its own generation settings."""
        lim = self.demo.config.limits

        def values(name: str) -> tuple:
            own = self.demo.config.decoding(task, name)
            return (min(own.num_beams, lim.max_beams), min(own.max_new_tokens, lim.max_new_tokens),
                    own.repetition_penalty)
        model_a.change(values, model_a, list(settings[1:]), **self.ui_only)

    def blind_controls(self, task: str) -> dict:
        """A blind checkbox, a blind ask button and vote buttons, placed where this is called."""
        with gr.Row():
            blind_on = gr.Checkbox(False, label="ブラインド / blind: random columns, names after your vote",
                                   elem_id=f"{task}-blind")
            ask_blind = gr.Button("質問する (ブラインド) / Ask blind", variant="primary", visible=False,
                                  elem_id=f"{task}-ask-blind")
        with gr.Row(visible=False) as vote_row:
            votes = [gr.Button(text, elem_id=f"{task}-vote-{key.lower()}") for key, text in blind.VOTES.items()]
        message = gr.Markdown(elem_id=f"{task}-vote-message")
        return {"on": blind_on, "ask": ask_blind, "row": vote_row, "votes": votes, "message": message,
                "round": gr.State(None)}

    def wire_blind(self, task: str, controls: dict, ask: Any, submit: Any, inputs: list, outputs: list,
                   answers: tuple, models: tuple) -> None:
        """Blind mode's events; ``submit`` (Enter in the question box) follows the mode."""
        demo, blind_on, round_state = self.demo, controls["on"], controls["round"]

        def toggle(on: bool, model_a: str, model_b: str) -> tuple:
            labels = blind.labels(demo.config, {"order": [model_a, model_b]}, revealed=not on)
            return (gr.update(visible=not on), gr.update(visible=on), gr.update(visible=on),
                    gr.update(label=labels[0]), gr.update(label=labels[1]))
        blind_on.change(toggle, [blind_on, *models], [ask, controls["ask"], controls["row"], *answers],
                        **self.ui_only)

        def blind_or_plain(*args: Any) -> Iterator[tuple]:
            yield from demo.blind_round(task, *args)
        status = outputs[0 if task == "vqa" else 3]
        for trigger in (controls["ask"].click, submit):  # private; named so no public endpoint's name is taken
            trigger(blind_or_plain, [blind_on, round_state, *inputs], [*outputs, round_state],
                    api_name=f"{task}_blind_or_plain", api_visibility="private", js=SCROLL_TO.format(f"{task}-answers"),
                    **self.gen_queue).then(None, status, status, js=WITH_QUEUE, **self.ui_only)
        for key, button in zip(blind.VOTES, controls["votes"]):
            button.click(lambda state, tally, key=key: demo.cast_vote(key, state, tally), [round_state, self.tally],
                         [*answers, controls["message"], round_state, self.tally], **self.ui_only)

def build(demo: Demo, *, concurrency: int) -> gr.Blocks:
    # "model default": the model's own template from the models YAML, else the tab's (the paper's)
    templates = [MODEL_DEFAULT, AUTO, *(name for name in prompts.template_names() if name != prompts.CHAT)]
    # delete_cache: uploads older than an hour go, so a public Space does not fill its disk.
    with gr.Blocks(title="EvoVLM demo", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        layout = _Layout(demo, templates, {"concurrency_limit": concurrency, "concurrency_id": "generate"},
                         tally=gr.State({}))
        gr.Markdown("## EvoVLM — evolutionary model merging demo  \n"
                    "Two models side by side: an evolved merge and its sources "
                    "([Akiba et al. 2024](https://arxiv.org/abs/2403.13187)).")
        header = header_markdown(demo.config)
        if header:
            gr.Markdown(header, elem_id="showcase")
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone every tab stays in sight, on two or three rows
            vqa_models = _image_qa_tab(layout)
            chat_models = _chat_tab(layout)
            _cases_tab(layout, blocks)
            _evolution_tab(layout, blocks)
            _models_tab(layout, [*vqa_models, *chat_models])
    return blocks


def _model_pair(demo: Demo, kind: str) -> tuple:
    """The A and B model dropdowns of a tab (``kind`` vqa or chat), set to the default pair."""
    return tuple(gr.Dropdown(demo.registry.choices(kind), value=value, label=f"model {side}",
                             elem_id=f"{kind}-model-{side.lower()}")
                 for side, value in zip("AB", demo.registry.default_pair(kind)))


def _labelled(demo: Demo, side: str) -> Callable[[str], Any]:
    return lambda name: gr.update(label=f"{side}: {demo.config.label(name)}")


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
                    model_a, model_b = _model_pair(demo, "vqa")
                vqa_settings = layout.settings(demo.config.decoding("vqa", model_a.value))
                ask = gr.Button("質問する / Ask", variant="primary", elem_id="vqa-ask")
                blind_controls = layout.blind_controls("vqa")
            with gr.Column(scale=3, elem_id="vqa-answers"):
                vqa_status = gr.Markdown(elem_id="vqa-status")
                with gr.Row():
                    with gr.Column(min_width=160):
                        answer_a = gr.Textbox(label=f"A: {demo.config.label(model_a.value)}", lines=8,
                                              interactive=False, elem_id="vqa-answer-a", elem_classes="answer",
                                              buttons=["copy"])
                        grade_a = gr.Markdown(elem_id="vqa-grade-a")
                    with gr.Column(min_width=160):
                        answer_b = gr.Textbox(label=f"B: {demo.config.label(model_b.value)}", lines=8,
                                              interactive=False, elem_id="vqa-answer-b", elem_classes="answer",
                                              buttons=["copy"])
                        grade_b = gr.Markdown(elem_id="vqa-grade-b")
        examples = demo.examples["vqa"]
        gr.Examples(examples.rows(), inputs=[image, question], label=examples.label, elem_id="vqa-examples")
        vqa_inputs = [image, question, model_a, model_b, *vqa_settings]
        vqa_outputs = [vqa_status, answer_a, answer_b, grade_a, grade_b]
        ask.click(demo.image_qa, vqa_inputs, vqa_outputs, api_name="image_qa", js=SCROLL_TO.format("vqa-answers"),
                  **gen_queue).then(None, vqa_status, vqa_status, js=WITH_QUEUE, **ui_only)
        layout.wire_blind("vqa", blind_controls, ask, question.submit, vqa_inputs, vqa_outputs, (answer_a, answer_b),
                          (model_a, model_b))
        model_a.change(_labelled(demo, "A"), model_a, answer_a, **ui_only)
        model_b.change(_labelled(demo, "B"), model_b, answer_b, **ui_only)
        layout.follow_model_a("vqa", model_a, vqa_settings)
    return model_a, model_b


def _chat_tab(layout: _Layout) -> tuple:
    """The chat tab; returns its two model dropdowns."""
    demo, lim, gen_queue, ui_only = layout.demo, layout.demo.config.limits, layout.gen_queue, layout.ui_only
    with gr.Tab("チャット · Chat", id="chat"):
        with gr.Row():
            chat_model_a, chat_model_b = _model_pair(demo, "chat")
        with gr.Row(elem_id="chat-answers"):
            with gr.Column(min_width=160):
                history_a = gr.Chatbot(label=f"A: {demo.config.label(chat_model_a.value)}", height=340,
                                       elem_id="chat-a")
                grade_a = gr.Markdown(elem_id="chat-grade-a")
            with gr.Column(min_width=160):
                history_b = gr.Chatbot(label=f"B: {demo.config.label(chat_model_b.value)}", height=340,
                                       elem_id="chat-b")
                grade_b = gr.Markdown(elem_id="chat-grade-b")
        chat_status = gr.Markdown(elem_id="chat-status")
        with gr.Row():
            message = gr.Textbox(placeholder="メッセージ / message", show_label=False, scale=5,
                                 max_length=lim.max_question_chars, elem_id="chat-message")
            send = gr.Button("送信 / Send", variant="primary", scale=1, elem_id="chat-send")
            clear = gr.Button("クリア / Clear", scale=1)
        blind_controls = layout.blind_controls("chat")
        chat_settings = layout.settings(demo.config.decoding("chat", chat_model_a.value))
        examples = demo.examples["chat"]
        gr.Examples(examples.rows(), inputs=[message], label=examples.label, elem_id="chat-examples")
        chat_inputs = [message, history_a, history_b, chat_model_a, chat_model_b, *chat_settings]
        chat_outputs = [history_a, history_b, message, chat_status, grade_a, grade_b]
        send.click(demo.chat, chat_inputs, chat_outputs, api_name="chat", js=SCROLL_TO.format("chat-answers"),
                   **gen_queue).then(None, chat_status, chat_status, js=WITH_QUEUE, **ui_only)
        layout.wire_blind("chat", blind_controls, send, message.submit, chat_inputs, chat_outputs,
                          (history_a, history_b), (chat_model_a, chat_model_b))
        clear.click(lambda: ([], [], "", "", ""), None, [history_a, history_b, chat_status, grade_a, grade_b],
                    **ui_only)
        chat_model_a.change(_labelled(demo, "A"), chat_model_a, history_a, **ui_only)
        chat_model_b.change(_labelled(demo, "B"), chat_model_b, history_b, **ui_only)
        layout.follow_model_a("chat", chat_model_a, chat_settings)
    return chat_model_a, chat_model_b


def _cases_tab(layout: _Layout, blocks: gr.Blocks) -> None:
    """Results files side by side, sample by sample; the showcase's first comparison on load."""
    demo, light, ui_only = layout.demo, layout.light, layout.ui_only
    bundled = {pair.label: pair for pair in demo.config.showcase.results
               if Path(pair.a).is_file() and (pair.b is None or Path(pair.b).is_file())}
    first = next(iter(bundled.values()), None)
    with gr.Tab("ケーススタディ · Case studies", id="cases"):
        gr.Markdown("Results files from `evovlm eval --out FILE`: A alone, or A against B, sample by sample.")
        if bundled:
            comparison = gr.Dropdown(list(bundled), value=first.label, label="bundled comparisons (test split)",
                                     elem_id="cases-bundled")
        with gr.Row():
            file_a = gr.File(first.a if first else None, label="results A (.json)", file_types=[".json"],
                             elem_id="cases-file-a")
            file_b = gr.File(first.b if first else None, label="results B (.json, optional)",
                             file_types=[".json"], elem_id="cases-file-b")
        with gr.Row():
            metric = gr.Dropdown([], label="per-sample metric", allow_custom_value=True)
            which = gr.Radio(case_lib.FILTERS, value="all", label="filter")
            sort = gr.Dropdown(case_lib.SORTS, value=case_lib.SORTS[0], label="sort")
            search = gr.Textbox(label="search", placeholder="question, reference or response text")
        with gr.Row():
            case_summary = gr.Markdown(elem_id="cases-summary")
            histogram = gr.BarPlot(x="A − B", y="samples", visible=False, height=220, elem_id="cases-histogram",
                                   sort=None)
        case_table = gr.Dataframe(headers=case_lib.TABLE_HEADERS, interactive=False, wrap=True, max_height=320)
        with gr.Row():
            prev_case = gr.Button("◀ previous")
            position = gr.Number(0, label="position in the list", precision=0, minimum=0)
            next_case = gr.Button("next ▶")
        with gr.Row():
            case_image = gr.Image(label="image", type="pil", interactive=False, height=260, visible=False,
                                  elem_id="cases-image")
            with gr.Column():
                case_question = gr.Textbox(label="question", interactive=False)
                case_reference = gr.Textbox(label="reference", interactive=False)
        with gr.Row():
            case_resp_a = gr.Textbox(label="response A", lines=4, interactive=False, elem_id="cases-response-a")
            case_resp_b = gr.Textbox(label="response B", lines=4, interactive=False, elem_id="cases-response-b")
        case_detail = gr.Markdown()
        case_inputs = [file_a, file_b, metric, which, sort, search, position]
        case_outputs = [case_summary, metric, case_table, position, case_image, case_question, case_reference,
                        case_resp_a, case_resp_b, case_detail, histogram]
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
        if bundled:
            comparison.change(lambda label: (bundled[label].a, bundled[label].b), comparison, [file_a, file_b],
                              **ui_only)
            blocks.load(**load_cases, api_visibility="private", **light)


def _evolution_tab(layout: _Layout, blocks: gr.Blocks) -> None:
    """An evolution run's fitness, recipe and layer path, optionally refreshed live; the newest run first."""
    demo, light, ui_only = layout.demo, layout.light, layout.ui_only
    with gr.Tab("進化 · Evolution", id="evolution"):
        runs_found = demo.run_choices()
        with gr.Row():
            run_dir = gr.Dropdown(runs_found, value=runs_found[0][1] if runs_found else None,
                                  allow_custom_value=True, label="run directory (evovlm evolve --out), newest first",
                                  scale=4, elem_id="run-dir")
            rescan = gr.Button("find runs", scale=1)
            refresh = gr.Button("⟳ refresh", variant="primary", scale=1)
            live = gr.Checkbox(False, label="auto-refresh (5 s)", scale=1)
        run_summary = gr.Markdown(elem_id="run-summary")
        with gr.Row():
            curve = gr.LinePlot(x="generation", y="fitness", color="series", label="fitness (hover for values)",
                                tooltip="all", elem_id="run-curve")
            scores = gr.Dataframe(headers=["model", "note", "score"], interactive=False,
                                  label="starting model, best, validation and test scores")
        heatmap = gr.Image(label="best recipe: weights and densities", type="pil", interactive=False)
        dfs = gr.Image(label="DFS layer path", type="pil", interactive=False, visible=False)
        recipe = gr.Code(label="best recipe", language="yaml", interactive=False)
        run_outputs = [run_summary, curve, heatmap, dfs, scores, recipe]
        refresh.click(demo.run, run_dir, run_outputs, api_name="run", **light)
        run_dir.change(demo.run, run_dir, run_outputs, api_visibility="private", **light)
        rescan.click(demo.list_runs, None, run_dir, api_name="list_runs", **light)
        timer = gr.Timer(5.0, active=False)
        timer.tick(demo.run, run_dir, run_outputs, api_visibility="private", show_progress="hidden", **light)
        live.change(lambda on: gr.Timer(active=bool(on)), live, timer, **ui_only)
        if runs_found:  # show the newest run straight away
            blocks.load(demo.run, run_dir, run_outputs, api_visibility="private", **light)


def _models_tab(layout: _Layout, dropdowns: list) -> None:
    """The models YAML's entries and whether each is available; a re-check updates every dropdown."""
    demo, light = layout.demo, layout.light
    cfg = demo.config
    with gr.Tab("モデル · Models", id="models"):
        gr.Markdown(f"From `{Path(cfg.source).name}`. At most {demo.cache.max_resident} models stay loaded "
                    "(least recently used evicted first).")
        model_table = gr.Dataframe(demo.model_rows(), headers=["name", "kind", "ref", "status", "path or reason",
                                                         "description"], interactive=False, wrap=True)
        recheck = gr.Button("⟳ re-check availability")
        recheck.click(demo.models, None, [model_table, *dropdowns], api_name="models", **light)
