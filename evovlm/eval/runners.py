"""Model runners: batched, deterministic generation for causal LMs and Llava-style VLMs.

A runner wraps a model plus its tokenizer (causal LM) or processor (VLM). It loads from a
directory with the transformers Auto classes (``local_files_only``, never remote code) or wraps
an already-loaded model, which is how the evolution engine evaluates candidates merged in memory.

Batched generation must reproduce one-by-one ``generate`` exactly, so:
  * batches are left-padded and sorted by length (outputs come back in input order);
  * the repetition penalty ignores pad tokens (transformers' own processor would also penalise
    the pad id sitting in the prompt, which changes outputs when pad == eos);
  * stop strings end a row early (``_StopOnStrings``) and the text is cut at the first one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from evovlm.argtypes import MAX_NEW_TOKENS
from evovlm.dtypes import torch_dtype
from evovlm.errors import EvoVLMError, option
from evovlm.eval import prompts


@dataclass(frozen=True)
class GenerationSettings:
    """How to prompt and decode. Greedy when ``num_beams == 1``; never sampled."""

    template: str = "plain"
    max_new_tokens: int = 512
    num_beams: int = 1
    repetition_penalty: float = 1.0
    stop_strings: tuple[str, ...] = ()
    batch_size: int = 8

    def with_overrides(self, **overrides: Any) -> GenerationSettings:
        """A copy with every non-``None`` override applied (CLI flags left unset keep the default)."""
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise EvoVLMError(f"unknown generation setting(s): {', '.join(sorted(unknown))}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "stop_strings" in chosen:
            chosen["stop_strings"] = tuple(chosen["stop_strings"])
        return replace(self, **chosen).validated()

    def validated(self) -> GenerationSettings:
        for name, most in (("max_new_tokens", MAX_NEW_TOKENS), ("num_beams", 64), ("batch_size", 4096)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise EvoVLMError(f"{name.replace('_', '-')} must be a whole number from 1 to {most:,}, got {value!r}")
        penalty = self.repetition_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0 < penalty <= 10:
            raise EvoVLMError(f"repetition-penalty must be a number above 0 and at most 10, got {penalty!r}")
        if any(not s for s in self.stop_strings):
            raise EvoVLMError("stop strings must be non-empty")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop_strings"] = list(self.stop_strings)
        return out


def pick_device_dtype(device: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 (fp16 on GPUs without bf16) when available, else CPU fp32; both overridable."""
    try:
        dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except RuntimeError as exc:
        raise EvoVLMError(f"bad {option('device')} {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvoVLMError(f"{option('device')} {device} requested but CUDA is not available on this machine")
    if dtype:
        return dev, torch_dtype(dtype, option("dtype"))
    if dev.type == "cuda":
        return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dev, torch.float32


def is_vlm_dir(path: str | Path) -> bool:
    """True when the checkpoint's config.json describes a Llava-family VLM."""
    from evovlm.arch import is_vlm_config
    from evovlm.io.checkpoint import read_model_config

    return is_vlm_config(read_model_config(path))


class _RepetitionPenalty:
    """CTRL repetition penalty (same arithmetic as transformers') over real tokens only, not left padding."""

    def __init__(self, penalty: float, pad_counts: torch.Tensor, num_beams: int):
        self.penalty = penalty
        self.pad_counts = pad_counts.repeat_interleave(num_beams)  # beam rows are grouped per sample

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        real = (positions[None, :] >= self.pad_counts.to(input_ids.device)[:, None]).to(scores.dtype)
        seen = torch.zeros_like(scores).scatter_add_(1, input_ids, real) > 0
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


class _StopOnStrings:
    """Marks a row finished once its generated text contains a stop string (per-row early stop)."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.prompt_len = prompt_len
        # A token decodes to at least a byte; 4 bytes per char covers byte-fallback tokenizers.
        self.tail_tokens = 4 * max(len(s) for s in self.stop_strings) + 8
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        if self.done is None or self.done.shape[0] != input_ids.shape[0]:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        start = max(self.prompt_len, input_ids.shape[1] - self.tail_tokens)
        todo = (~self.done).nonzero().flatten().tolist()
        if todo:
            tails = self.tokenizer.batch_decode(input_ids[todo, start:].cpu(), skip_special_tokens=True)
            for row, text in zip(todo, tails):
                if any(s in text for s in self.stop_strings):
                    self.done[row] = True
        return self.done.to(input_ids.device)


def truncate_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:cut]


class BaseRunner:
    """Shared batching loop; subclasses turn a batch of prompts (+ images) into model inputs.

    The tokenizer is switched to left padding (and given eos as pad when it has no pad token).
    """

    kind = "?"
    # transformers Auto classes that load this runner's model and its tokenizer/processor
    auto_model = ""
    auto_preprocessor = ""

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        if tokenizer.pad_token_id is None:  # left padding needs a pad id; eos is the usual stand-in
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None, dtype: str | None = None,
                        allow_pickle: bool | None = None) -> "BaseRunner":
        """``allow_pickle``: load a folder of pickle weights (with weights_only=True); None: refuse, and
        the front end offers no way to allow it."""
        import transformers

        from evovlm.io.checkpoint import check_weights_format

        safe = check_weights_format(str(path), Path(path), allow_pickle)
        dev, torch_dtype = pick_device_dtype(device, dtype)
        preprocessor = _load(getattr(transformers, cls.auto_preprocessor), path)
        model = _load_model(getattr(transformers, cls.auto_model), path, dtype=torch_dtype, use_safetensors=safe)
        return cls(model.to(dev), preprocessor, name=str(path))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _eos_ids(self) -> list[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    def _token_lengths(self, prompts: Sequence[str], add_special_tokens: bool) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]]

    def _batch_inputs(self, prompts: list[str], images: list[Any] | None, add_special_tokens: bool) -> dict:
        raise NotImplementedError

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        images: Sequence[Any] | None = None,
        add_special_tokens: bool = True,
        progress: bool = True,
        batches: Collection[int] | None = None,
    ) -> list[str | None]:
        """Generate a response for each fully rendered prompt; results follow the input order.

        ``batches``: generate only these batches (indices into the longest-first batching of all
        ``prompts``); the other responses are None. A shard of an evaluation so made holds exactly
        the batches, and so the responses, that the whole evaluation would have."""
        from evovlm.progress import progress_bar

        settings = settings.validated()
        if not prompts:
            return []
        if images is not None and len(images) != len(prompts):
            raise EvoVLMError(f"{len(prompts)} prompts but {len(images)} images")
        lengths = self._token_lengths(prompts, add_special_tokens)
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first: OOM shows up at once
        outputs: list[str] = [None if batches is not None else ""] * len(prompts)
        starts = list(range(0, len(order), settings.batch_size))
        if batches is not None:
            starts = [start for number, start in enumerate(starts) if number in batches]
        bar = progress_bar(total=sum(len(order[start:start + settings.batch_size]) for start in starts),
                           desc=f"generate ({self.kind})", disable=not progress, leave=False)
        for start in starts:
            chunk = order[start:start + settings.batch_size]
            batch_images = [images[i] for i in chunk] if images is not None else None
            inputs = self._batch_inputs([prompts[i] for i in chunk], batch_images, add_special_tokens)
            for i, text in zip(chunk, self._generate_batch(inputs, settings)):
                outputs[i] = text
            bar.update(len(chunk))
        bar.close()
        return outputs

    @torch.inference_mode()
    def _generate_batch(self, inputs: dict, settings: GenerationSettings) -> list[str]:
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        inputs = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=settings.num_beams,
            repetition_penalty=1.0,  # applied by _RepetitionPenalty instead, padding-aware
            no_repeat_ngram_size=0, length_penalty=1.0, early_stopping=False, use_cache=True,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._eos_ids() or None,
        )
        processors = LogitsProcessorList()
        if settings.repetition_penalty != 1.0:
            pad_counts = (inputs["attention_mask"] == 0).sum(dim=1).cpu()
            processors.append(_RepetitionPenalty(float(settings.repetition_penalty), pad_counts, settings.num_beams))
        criteria = StoppingCriteriaList()
        if settings.stop_strings:
            criteria.append(_StopOnStrings(self.tokenizer, settings.stop_strings, prompt_len))
        output_ids = self.model.generate(
            **inputs, generation_config=config, logits_processor=processors, stopping_criteria=criteria
        )
        texts = self.tokenizer.batch_decode(output_ids[:, prompt_len:].cpu(), skip_special_tokens=True)
        return [truncate_at_stop(t, settings.stop_strings).strip() for t in texts]

    def answer(
        self,
        questions: Sequence[str],
        settings: GenerationSettings,
        *,
        images: Sequence[Any] | None = None,
        progress: bool = True,
        batches: Collection[int] | None = None,
    ) -> list[str | None]:
        """Render ``questions`` with ``settings.template`` and generate (images go to VLMs only)."""
        rendered = self.render(questions, settings.template, with_image=images is not None)
        return self.generate(
            rendered, settings, images=images,
            add_special_tokens=not prompts.template_emits_bos(settings.template), progress=progress, batches=batches,
        )

    def render(self, questions: Sequence[str], template: str, *, with_image: bool = False) -> list[str]:
        if with_image:
            raise EvoVLMError(f"{self.name} is a text-only model: it cannot answer questions about images")
        return [prompts.build_prompt(template, q, tokenizer=self.tokenizer) for q in questions]


class CausalLMRunner(BaseRunner):
    """AutoModelForCausalLM + AutoTokenizer."""

    kind = "causal-lm"
    auto_model = "AutoModelForCausalLM"
    auto_preprocessor = "AutoTokenizer"

    def _batch_inputs(self, prompts: list[str], images: list[Any] | None, add_special_tokens: bool) -> dict:
        if images is not None:
            raise EvoVLMError(f"{self.name} is a text-only model: it cannot take images")
        return self.tokenizer(prompts, add_special_tokens=add_special_tokens, padding=True, return_tensors="pt")


class VLMRunner(BaseRunner):
    """Llava / LlavaNext: AutoModelForImageTextToText + AutoProcessor. Text-only prompts work too."""

    kind = "vlm"
    auto_model = "AutoModelForImageTextToText"
    auto_preprocessor = "AutoProcessor"

    def __init__(self, model: Any, processor: Any, *, name: str | None = None):
        self.processor = processor
        super().__init__(model, processor.tokenizer, name=name)

    @property
    def image_token(self) -> str:
        return getattr(self.processor, "image_token", None) or prompts.IMAGE_PLACEHOLDER

    def render(self, questions: Sequence[str], template: str, *, with_image: bool = False) -> list[str]:
        token = self.image_token if with_image else None
        return [prompts.build_prompt(template, q, image_token=token, tokenizer=self.tokenizer) for q in questions]

    def _batch_inputs(self, prompts: list[str], images: list[Any] | None, add_special_tokens: bool) -> dict:
        if images is None:
            return self.tokenizer(prompts, add_special_tokens=add_special_tokens, padding=True, return_tensors="pt")
        return dict(self.processor(
            text=prompts, images=[_as_rgb(img) for img in images], padding=True,
            add_special_tokens=add_special_tokens, return_tensors="pt",
        ))


Runner = CausalLMRunner | VLMRunner


# A benchmark image above this many pixels is refused before it is decoded (decompression bombs).
MAX_IMAGE_PIXELS = 50_000_000


def _as_rgb(image: Any) -> Any:
    """Accept a PIL image or a path; VLM image processors expect RGB."""
    from PIL import Image

    name = image if isinstance(image, (str, Path)) else getattr(image, "filename", "") or "an in-memory image"

    def checked(opened: Any) -> Any:  # the size comes from the header: nothing is decoded yet
        width, height = opened.size
        if width * height > MAX_IMAGE_PIXELS:
            raise EvoVLMError(f"image {name} is {width}×{height}, above the {MAX_IMAGE_PIXELS / 1e6:.0f} MP that "
                              "are read; downscale it")
        return opened

    try:
        if isinstance(image, (str, Path)):
            with Image.open(image) as opened:
                return checked(opened).convert("RGB")
        return checked(image).convert("RGB") if image.mode != "RGB" else image
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise EvoVLMError(f"cannot read image {name}: {type(exc).__name__}") from None


def _load(auto_cls: Any, path: str | Path, **kwargs: Any) -> Any:
    from evovlm.dfs import register

    register()  # a DFS checkpoint (model_type evovlm_dfs) loads like any other
    try:
        return auto_cls.from_pretrained(str(path), local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as exc:  # damaged weights, refused pickles, configs this transformers cannot read
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvoVLMError(f"cannot load {auto_cls.__name__} from {path}: {first_line}") from None


def _load_model(auto_cls: Any, path: str | Path, **kwargs: Any) -> Any:
    """A model whose checkpoint holds every weight: transformers fills a missing tensor with fresh random
    values and only logs it, and a score of such a model would mean nothing (a misshapen one is an error)."""
    model, info = _load(auto_cls, path, output_loading_info=True, **kwargs)
    missing = sorted(map(str, info.get("missing_keys") or ()))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise EvoVLMError(f"cannot load {path}: its checkpoint lacks {shown}; it was cut short or saved from "
                          "another architecture than its config.json names")
    return model


def load_runner(path: str | Path, *, device: str | None = None, dtype: str | None = None,
                allow_pickle: bool | None = None) -> Runner:
    """Load the right runner for the checkpoint in ``path`` (VLM when its config has a vision tower)."""
    cls = VLMRunner if is_vlm_dir(path) else CausalLMRunner
    return cls.from_pretrained(path, device=device, dtype=dtype, allow_pickle=allow_pickle)


def make_runner(model: Any, tokenizer_or_processor: Any, *, name: str | None = None) -> Runner:
    """Wrap an already-loaded model (e.g. a merged candidate held in memory)."""
    if getattr(tokenizer_or_processor, "tokenizer", None) is not None \
            and hasattr(tokenizer_or_processor, "image_processor"):
        return VLMRunner(model, tokenizer_or_processor, name=name)
    return CausalLMRunner(model, tokenizer_or_processor, name=name)
