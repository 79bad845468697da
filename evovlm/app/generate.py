"""Bounded inputs and token-by-token generation for the demo's columns.

Everything a visitor sends is bounded here: images (refused unread above a pixel budget, else
decoded and downscaled), question length, beams and new tokens. Greedy generation streams through a
small streamer that re-decodes the generated ids (Japanese has no spaces, so transformers'
word-buffering ``TextStreamer`` would hold kana back until a newline); beam search cannot stream in
transformers, so with beams > 1 the runner's own batched ``generate`` produces the final answer.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from evovlm.app.config import Limits, public_reason
from evovlm.errors import EvoVLMError
from evovlm.eval import prompts


class UserError(Exception):
    """A problem with the visitor's input: shown as a friendly message, never as a traceback."""


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def load_image(path: str | BinaryIO, limits: Limits) -> tuple[Any, str]:
    """Open an uploaded image safely: returns (RGB PIL image, note about resizing or "")."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    # Our budget is checked on the header, before any pixel is decoded; PIL's own (process-wide)
    # guard stays as it is and raises DecompressionBombError far beyond it.
    try:
        with Image.open(path) as opened:  # reads the header only
            width, height = opened.size
            if width * height > limits.max_image_pixels:
                raise UserError(f"画像が大きすぎます ({width}×{height})。The image is too large "
                                f"({width}×{height} = {width * height / 1e6:.0f} MP; the limit is "
                                f"{limits.max_image_pixels / 1e6:.0f} MP).")
            opened.draft("RGB", (limits.max_image_side, limits.max_image_side))  # JPEG: decode at reduced size
            image = ImageOps.exif_transpose(opened)
            image = image.convert("RGB")
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise UserError("画像が大きすぎます。The image is too large to decode safely.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError("画像を読み込めませんでした。This file is not a readable image.") from None
    note = ""
    if max(image.size) > limits.max_image_side:
        before = image.size
        image.thumbnail((limits.max_image_side, limits.max_image_side), Image.Resampling.LANCZOS)
        note = f"画像を {before[0]}×{before[1]} から {image.size[0]}×{image.size[1]} に縮小しました (downscaled)."
    return image, note


def check_question(question: str | None, limits: Limits) -> str:
    text = (question or "").strip()
    if not text:
        raise UserError("質問を入力してください。Please type a question.")
    if len(text) > limits.max_question_chars:
        raise UserError(f"質問が長すぎます ({len(text)} 文字)。The question is too long "
                        f"({len(text)} characters; the limit is {limits.max_question_chars}).")
    return text


@dataclass(frozen=True)
class Decoding:
    """Settings after clamping to the limits."""

    num_beams: int
    max_new_tokens: int
    repetition_penalty: float

    @classmethod
    def clamped(cls, num_beams: Any, max_new_tokens: Any, repetition_penalty: Any, limits: Limits) -> Decoding:
        def number(value: Any, default: float) -> float:
            try:
                value = float(value)
            except (TypeError, ValueError):
                return default
            return default if math.isnan(value) else value  # NaN slips past Gradio's range check; inf is clamped

        return cls(
            num_beams=int(min(max(number(num_beams, 1), 1), limits.max_beams)),
            max_new_tokens=int(min(max(number(max_new_tokens, 64), 1), limits.max_new_tokens)),
            repetition_penalty=float(min(max(number(repetition_penalty, 1.0), 1.0), 2.0)),
        )


# -- prompts --------------------------------------------------------------------------------------

# Multi-turn chat with the paper's single-turn templates: the first turn is the full template
# (system text included), each answer follows its prompt, and later turns use the template's turn
# format only. (separator before an answer, next user turn)
_FOLLOW_UP: dict[str, tuple[str, str]] = {
    "ja-alpaca-cot": ("\n", "\n\n### 指示:\n{input}\n\n### 応答:"),
    "ja-shisa-vqa": (" ", " [INST] {input} [/INST]"),
    "llava-mistral": (" ", " [INST] {input} [/INST]"),
    "plain": ("\n", "\n{input}\n"),
}
# A model that starts the next turn itself has finished its answer.
_TURN_STOPS: dict[str, tuple[str, ...]] = {
    "ja-alpaca-cot": prompts.ALPACA_STOP_STRINGS + ("### 指示",),
    "ja-shisa-vqa": ("[INST]",),
    "llava-mistral": ("[INST]",),
}
AUTO = "auto"          # the tokenizer's chat template, else ja-alpaca-cot
MODEL_DEFAULT = "model default"


@dataclass(frozen=True)
class Prompt:
    text: str
    add_special_tokens: bool
    stop_strings: tuple[str, ...] = ()


def _chat_template_owner(runner: Any) -> Any:
    """The object whose chat template applies: a VLM's processor, else the tokenizer."""
    processor = getattr(runner, "processor", None)
    if processor is not None and getattr(processor, "chat_template", None):
        return processor
    return runner.tokenizer if getattr(runner.tokenizer, "chat_template", None) else None


def vqa_prompt(runner: Any, question: str, template: str) -> Prompt:
    if template in (AUTO, prompts.CHAT):
        owner = _chat_template_owner(runner)
        if owner is None:
            if template == prompts.CHAT:
                raise UserError(f"{runner.name} has no chat template; pick a prompt template instead.")
            template = "ja-shisa-vqa"
        else:
            content = [{"type": "image"}, {"type": "text", "text": question}]
            text = owner.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
            return Prompt(text, add_special_tokens=False)
    text = runner.render([question], template, with_image=True)[0]
    return Prompt(text, add_special_tokens=True, stop_strings=turn_stops(template))


def bounded_prompt(runner: Any, prompt: Prompt, decoding: Decoding, limits: Limits) -> Prompt:
    """``prompt`` if its tokens fit ``limits.max_prompt_tokens`` and the model's context, else a UserError."""
    config = getattr(runner.model, "config", None)
    context = getattr(getattr(config, "text_config", None) or config, "max_position_embeddings", None)
    limit = limits.max_prompt_tokens
    if isinstance(context, int) and context > 0:
        limit = min(limit, max(1, context - decoding.max_new_tokens))
    tokens = len(runner.tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"])
    if tokens > limit and isinstance(context, int) and tokens < context and decoding.max_new_tokens > context // 2:
        raise UserError(f"生成する長さが長すぎます。{decoding.max_new_tokens} new tokens leave no room for this prompt "
                        f"({tokens} tokens) in the {context}-token context of {runner.name}: set the new tokens to "
                        f"{context - tokens} or fewer.")
    if tokens > limit:
        raise UserError(f"会話が長すぎます。The prompt is too long for {runner.name} ({tokens} tokens; at most {limit} "
                        "here). Clear the chat or ask a shorter question.")
    return prompt


def chat_prompt(runner: Any, messages: Sequence[dict], template: str) -> Prompt:
    """Render a conversation (``[{role, content: str}]``, ending with a user turn) for ``runner``."""
    if template in (AUTO, prompts.CHAT):
        owner = _chat_template_owner(runner)
        if owner is not None:
            if owner is getattr(runner, "processor", None):  # processors want typed content parts
                messages = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in messages]
            text = owner.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            return Prompt(text, add_special_tokens=False)
        if template == prompts.CHAT:
            raise UserError(f"{runner.name} has no chat template; pick a prompt template instead.")
        template = "ja-alpaca-cot"
    users = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    text = prompts.build_prompt(template, users[0])
    body = prompts.TEMPLATES.get(template, template)
    # Other templates (e.g. the zoo's "Q: {input}\nA:"): each turn repeats the whole template.
    separator, follow_up = _FOLLOW_UP.get(template, (" ", "\n" + body))
    for answer, user in zip(answers, users[1:]):
        text += separator + answer + follow_up.replace("{input}", user)
    return Prompt(text, add_special_tokens=True, stop_strings=turn_stops(template))


def turn_stops(template: str) -> tuple[str, ...]:
    """Where an answer ends: the template's next-turn marker ("\\nQ:" for the zoo's "Q: {input}\\nA:")."""
    if template in _TURN_STOPS:
        return _TURN_STOPS[template]
    prefix = prompts.TEMPLATES.get(template, template).split("{input}")[0].strip()
    return ("\n" + prefix,) if prefix else ()


# -- streaming ------------------------------------------------------------------------------------

def _ids_streamer(tokenizer: Any, emit: Callable[[str], None]) -> Any:
    from transformers.generation.streamers import BaseStreamer

    class IdsStreamer(BaseStreamer):
        """Re-decodes all generated ids at each step: correct for text without spaces."""

        def __init__(self) -> None:
            self.ids: list[int] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate() first hands over the prompt
                self.prompt_seen = True
                return
            self.ids.extend(int(i) for i in value.flatten().tolist())
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                emit(text)

        def end(self) -> None:
            pass

    return IdsStreamer()


def _stop_on_event(event: threading.Event) -> Any:
    import torch
    from transformers import StoppingCriteria

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopOnEvent()


def _model_inputs(runner: Any, prompt: Prompt, image: Any) -> dict:
    if image is not None:
        inputs = dict(runner.processor(text=[prompt.text], images=[image], return_tensors="pt",
                                       add_special_tokens=prompt.add_special_tokens))
    else:
        inputs = dict(runner.tokenizer([prompt.text], return_tensors="pt",
                                       add_special_tokens=prompt.add_special_tokens))
    inputs = {k: v.to(runner.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(runner.dtype)
    return inputs


def _greedy(runner: Any, prompt: Prompt, decoding: Decoding, image: Any, emit: Callable[[str], None],
            cancel: threading.Event) -> None:
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    from evovlm.eval.runners import truncate_at_stop

    def on_text(text: str) -> None:
        shown = truncate_at_stop(text, prompt.stop_strings)
        stopped = len(shown) < len(text)
        emit(shown)
        if stopped:
            cancel.set()  # the model began a new turn: stop generating

    eos = getattr(runner.model.generation_config, "eos_token_id", None)
    config = GenerationConfig(
        max_new_tokens=decoding.max_new_tokens, do_sample=False, num_beams=1,
        repetition_penalty=decoding.repetition_penalty, use_cache=True,
        pad_token_id=runner.tokenizer.pad_token_id,
        eos_token_id=eos if eos is not None else runner.tokenizer.eos_token_id,
    )
    with torch.inference_mode():
        runner.model.generate(**_model_inputs(runner, prompt, image), generation_config=config,
                              streamer=_ids_streamer(runner.tokenizer, on_text),
                              stopping_criteria=StoppingCriteriaList([_stop_on_event(cancel)]))


def _beams(runner: Any, prompt: Prompt, decoding: Decoding, image: Any, emit: Callable[[str], None]) -> None:
    from evovlm.eval.runners import GenerationSettings

    settings = GenerationSettings(max_new_tokens=decoding.max_new_tokens, num_beams=decoding.num_beams,
                                  repetition_penalty=decoding.repetition_penalty,
                                  stop_strings=prompt.stop_strings, batch_size=1)
    (text,) = runner.generate([prompt.text], settings, images=[image] if image is not None else None,
                              add_special_tokens=prompt.add_special_tokens, progress=False)
    emit(text)


_DONE = object()


def stream(slot: Any, make_prompt: Callable[[Any], Prompt], decoding: Decoding, image: Any = None,
           *, timeout_s: float = 600.0) -> Iterator[str]:
    """Yield the growing answer of the model held in ``slot`` (a :class:`~evovlm.app.cache.Slot`).

    The model runs in a worker thread holding the model's lock; closing this generator (the
    visitor left, or the other column failed) stops the generation at the next token.
    """
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def work() -> None:
        try:
            with slot.lock:
                if cancel.is_set():
                    return
                runner = slot.runner
                prompt = make_prompt(runner)
                if decoding.num_beams > 1:
                    _beams(runner, prompt, decoding, image, events.put)
                else:
                    _greedy(runner, prompt, decoding, image, events.put, cancel)
        except BaseException as exc:  # shown in this column only
            events.put(exc)
        finally:
            events.put(_DONE)

    worker = threading.Thread(target=work, name="evovlm-generate", daemon=True)
    worker.start()
    pending: Any = None
    try:
        while True:
            if pending is None:
                try:
                    pending = events.get(timeout=timeout_s)
                except queue.Empty:
                    raise EvoVLMError(f"generation produced nothing for {timeout_s:.0f} s") from None
            item, pending = pending, None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            while not events.empty():  # coalesce a burst of tokens into one update
                nxt = events.get_nowait()
                if nxt is _DONE or isinstance(nxt, BaseException):
                    pending = nxt
                    break
                item = nxt
            yield item
    finally:
        cancel.set()


def merge_streams(streams: Sequence[Callable[[], Iterator[str]]], initial: Sequence[str]) -> Iterator[list[str]]:
    """Run several column generators at once; yield the list of their current texts on each change.

    Each generator is created, iterated and closed inside its own thread (a generator cannot be
    closed from another thread while it runs); an exception ends that column only, as its text.
    """
    texts = list(initial)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def drive(index: int, factory: Callable[[], Iterator[str]]) -> None:
        gen = None
        try:
            gen = factory()
            for text in gen:
                if stop.is_set():
                    break
                events.put((index, text))
        except Exception as exc:
            events.put((index, format_error(exc)))
        finally:
            if gen is not None:
                gen.close()
            events.put((index, _DONE))

    threads = [threading.Thread(target=drive, args=(i, f), daemon=True, name=f"evovlm-column-{i}")
               for i, f in enumerate(streams)]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            index, text = events.get()
            changed = False
            while True:
                if text is _DONE:
                    running -= 1
                else:
                    texts[index] = text
                    changed = True
                try:
                    index, text = events.get_nowait()
                except queue.Empty:
                    break
            if changed:
                yield list(texts)
    finally:
        stop.set()


def format_error(exc: BaseException) -> str:
    """A column's error for the visitor: a user error says what to fix; anything else is logged on the
    server and shown without its type or message (which can hold server paths)."""
    if isinstance(exc, (UserError, EvoVLMError)):
        return f"⚠ {public_reason(str(exc))}"  # e.g. "cannot load ... from /srv/models/x": the visitor sees …/x
    logging.getLogger("evovlm.app").error("generation failed", exc_info=exc)
    if "out of memory" in str(exc).lower():
        return "⚠ メモリ不足です。The model ran out of memory on this input; try fewer beams or new tokens."
    return "⚠ エラー / error: the model failed on this input (the details are in the server log)."
