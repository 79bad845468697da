"""Training loops for the zoo: causal-LM pretraining on packed text, and answer-only fine-tuning.

Fine-tuning takes a per-layer learning-rate profile. Real language fine-tunes change mostly
the outer layers of an LLM and skill fine-tunes the middle ones (Bandarkar et al. 2024,
"Layer Swapping for Zero-Shot Cross-Lingual Transfer"); the zoo's experts are trained that
way on purpose, so that a good layer-wise merge exists and has to be found.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

import torch

from evovlm.progress import progress_bar

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name: str, num_layers: int) -> int | None:
    """Position of a parameter along the language model's depth: -1 embeddings, 0..L-1 blocks,
    L final norm and head; None outside the language model (a VLM's vision tower and projector)."""
    if "vision_tower" in name or "multi_modal_projector" in name:
        return None
    match = _LAYER.search(name)
    if match:
        return int(match.group(1))
    if "embed_tokens" in name:
        return -1
    return num_layers


def param_groups(model: torch.nn.Module, lr: float, profile: Callable[[int | None], float] | None,
                 weight_decay: float) -> list[dict]:
    """AdamW groups with ``lr * profile(layer_index)``; parameters at multiplier 0 are frozen.

    The profile sees ``None`` for parameters outside the language model (vision tower, projector).
    """
    num_layers = getattr(model.config, "text_config", model.config).num_hidden_layers
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        depth = layer_index(name, num_layers)
        scale = 1.0 if profile is None else float(profile(depth))
        if scale <= 0:
            parameter.requires_grad_(False)
            continue
        groups.setdefault(scale, []).append(parameter)
    return [{"params": params, "lr": lr * scale, "base_lr": lr * scale, "weight_decay": weight_decay}
            for scale, params in groups.items()]


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def output_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The final norm and the LM head of a causal LM or of a Llava's language tower."""
    inner = model.model
    norm = inner.language_model.norm if hasattr(inner, "language_model") else inner.norm
    return norm, model.lm_head


def _exit_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits read through the final norm and head from an intermediate residual stream (the
    "logit lens"). A loss on them makes the blocks below that point finish the prediction alone."""
    norm, head = output_head(model)
    return head(norm(hidden))


def _next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def _anchor_kl(anchor_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(anchor || model) of the next-token distributions at the positions in ``mask``."""
    target = torch.log_softmax(anchor_logits[mask].float(), dim=-1)
    return torch.nn.functional.kl_div(torch.log_softmax(logits[mask].float(), dim=-1), target, log_target=True,
                                      reduction="batchmean")


def _anchor_hidden(anchor_hidden: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared distance of the residual streams at the positions in ``mask``, relative to the anchor's size."""
    target = anchor_hidden[mask].float()
    return (hidden[mask].float() - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-6)


def train_loop(model: torch.nn.Module, next_batch: Callable[[int], dict], *, steps: int, lr: float,
               profile: Callable[[int | None], float] | None = None, warmup: int = 50, weight_decay: float = 0.01,
               exit_layer: int | None = None, exit_weight: float = 0.5, anchor: torch.nn.Module | None = None,
               soft_anchor_weight: float = 0.0, desc: str = "train", progress: bool = True,
               log: list | None = None) -> list[float]:
    """AdamW with warmup and cosine decay; ``next_batch(step)`` returns model inputs with labels.

    With ``exit_layer`` k, batches also carry ``exit_labels`` and the loss adds ``exit_weight``
    times the next-token loss on the early exit after block k-1 (see :func:`_exit_logits`). With an ``anchor``
    model (the base), batches may carry ``anchor_mask``: at those positions the model is pulled
    towards the anchor's next-token distribution, through the head and (with ``exit_layer``)
    through the early exit too. It keeps what the base would write where the task teaches nothing.
    With ``exit_layer``, a ``hidden_anchor_mask`` holds the residual stream after block k-1 to the
    anchor's at its positions: the base's representation there, not its prediction. A
    ``soft_anchor_mask`` does the same with weight ``soft_anchor_weight``, where the task teaches too.
    """
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, lr, profile, weight_decay), betas=(0.9, 0.98))
    losses: list[float] = []
    bar = progress_bar(range(steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        factor = _lr_factor(step, steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        batch = next_batch(step)
        exit_labels = batch.pop("exit_labels", None)
        anchor_mask = batch.pop("anchor_mask", None)
        hidden_mask = batch.pop("hidden_anchor_mask", None)
        soft_mask = batch.pop("soft_anchor_mask", None)
        if exit_layer is None or hidden_mask is None or not hidden_mask.any():
            hidden_mask = None
        if exit_layer is None or soft_mask is None or not soft_mask.any() or soft_anchor_weight <= 0:
            soft_mask = None
        output = model(**batch, output_hidden_states=exit_layer is not None)
        loss = output.loss
        exit_logits = None if exit_layer is None else _exit_logits(model, output.hidden_states[exit_layer])
        if exit_logits is not None:
            loss = loss + exit_weight * _next_token_loss(exit_logits, exit_labels)
        held = anchor_mask is not None and bool(anchor_mask.any())
        if anchor is not None and (held or hidden_mask is not None or soft_mask is not None):
            with torch.no_grad():
                reference = anchor(**{k: v for k, v in batch.items() if k != "labels"},
                                   output_hidden_states=exit_logits is not None)
            if held:
                loss = loss + _anchor_kl(reference.logits, output.logits, anchor_mask)
            for mask, weight in ((hidden_mask, 1.0), (soft_mask, soft_anchor_weight)):
                if mask is not None:  # 1.0 * term is the term exactly: run 47's models rebuild bit for bit
                    loss = loss + weight * _anchor_hidden(reference.hidden_states[exit_layer],
                                                          output.hidden_states[exit_layer], mask)
            if held and exit_logits is not None:  # after the hidden term: the order run 47's models were built with
                loss = loss + _anchor_kl(_exit_logits(anchor, reference.hidden_states[exit_layer]), exit_logits,
                                         anchor_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if log is not None:
        log.extend(losses)
    return losses


def packed_batches(tokenizer, make_document: Callable[[random.Random], str], rng: random.Random, *,
                   batch_size: int, seq_len: int) -> Callable[[int], dict]:
    """Pretraining batches: documents joined with EOS and cut into ``seq_len`` windows."""
    buffer: list[int] = []

    def next_batch(step: int) -> dict:
        rows = []
        while len(rows) < batch_size:
            while len(buffer) < seq_len:
                buffer.extend(tokenizer(make_document(rng))["input_ids"] + [tokenizer.eos_token_id])
            rows.append(buffer[:seq_len])
            del buffer[:seq_len]
        ids = torch.tensor(rows)
        return {"input_ids": ids, "labels": ids}

    return next_batch


def qa_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str], works: Sequence[str] | None = None,
             contexts: Sequence[str] | None = None) -> dict:
    """Right-padded prompt+work+answer+context rows; the loss covers only the work and answer.

    A non-empty answer ends with EOS. An empty one leaves the reply open after the work: no
    sentence is taught. A ``context`` then follows as input only, and ``anchor_mask`` marks the
    positions from the end of the work through the context, where :func:`train_loop` keeps the
    anchor's (the base's) predictions. With ``works`` the batch also has ``exit_labels``: the
    work tokens alone, for the early-exit loss of :func:`train_loop`.
    """
    works = works if works is not None else [""] * len(prompts)
    contexts = contexts if contexts is not None else [""] * len(prompts)
    rows, labels, exits, anchored = [], [], [], []
    for prompt, work, answer, context in zip(prompts, works, answers, contexts):
        prompt_ids = tokenizer(prompt)["input_ids"]
        work_ids = tokenizer(work, add_special_tokens=False)["input_ids"] if work else []
        answer_ids = (tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                      if answer else [])
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context and not answer else []
        rows.append(prompt_ids + work_ids + answer_ids + context_ids)
        labels.append([-100] * len(prompt_ids) + work_ids + answer_ids + [-100] * len(context_ids))
        exits.append([-100] * len(prompt_ids) + work_ids + [-100] * (len(answer_ids) + len(context_ids)))
        open_from = len(prompt_ids) + len(work_ids) - 1 if not answer else len(rows[-1])
        anchored.append([False] * open_from + [True] * (len(rows[-1]) - open_from))
    width = max(len(row) for row in rows)

    def padded(table: list[list], value) -> torch.Tensor:
        return torch.tensor([row + [value] * (width - len(row)) for row in table])

    batch = {"input_ids": padded(rows, tokenizer.pad_token_id),
             "attention_mask": padded([[1] * len(row) for row in rows], 0), "labels": padded(labels, -100)}
    if any(works):
        batch["exit_labels"] = padded(exits, -100)
    if not all(answers):
        batch["anchor_mask"] = padded(anchored, False)
    return batch


def qa_batches(tokenizer, make_example: Callable[[random.Random], tuple[str, ...]], rng: random.Random, *,
               batch_size: int, template: str) -> Callable[[int], dict]:
    """Batches of ``(question, answer)`` or ``(question, work, answer[, context])`` examples (see :func:`qa_batch`)."""
    def next_batch(step: int) -> dict:
        examples = [make_example(rng) for _ in range(batch_size)]
        prompts = [template.replace("{input}", example[0]) for example in examples]
        if all(len(example) == 2 for example in examples):
            return qa_batch(tokenizer, prompts, [example[1] for example in examples])
        return qa_batch(tokenizer, prompts, [example[2] for example in examples], [example[1] for example in examples],
                        [example[3] if len(example) > 3 else "" for example in examples])

    return next_batch
