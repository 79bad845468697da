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
from tqdm.auto import tqdm

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


def param_groups(model: torch.nn.Module, lr: float, profile: Callable[[int], float] | None,
                 weight_decay: float) -> list[dict]:
    """AdamW groups with ``lr * profile(layer_index)``; parameters at multiplier 0 are frozen.

    Parameters outside the language model (vision tower, projector) train at the full rate.
    """
    num_layers = getattr(model.config, "text_config", model.config).num_hidden_layers
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        depth = layer_index(name, num_layers)
        scale = 1.0 if profile is None or depth is None else float(profile(depth))
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


def train_loop(model: torch.nn.Module, next_batch: Callable[[int], dict], *, steps: int, lr: float,
               profile: Callable[[int], float] | None = None, warmup: int = 50, weight_decay: float = 0.01,
               desc: str = "train", progress: bool = True, log: list | None = None) -> list[float]:
    """AdamW with warmup and cosine decay; ``next_batch(step)`` returns model inputs with labels."""
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, lr, profile, weight_decay), betas=(0.9, 0.98))
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        factor = _lr_factor(step, steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        loss = model(**next_batch(step)).loss
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


def qa_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> dict:
    """Right-padded prompt+answer+EOS rows; the loss covers only the answer and EOS."""
    rows, labels = [], []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    attention = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    label_ids = torch.tensor([row + [-100] * (width - len(row)) for row in labels])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids}


def qa_batches(tokenizer, make_pair: Callable[[random.Random], tuple[str, str]], rng: random.Random, *,
               batch_size: int, template: str) -> Callable[[int], dict]:
    def next_batch(step: int) -> dict:
        pairs = [make_pair(rng) for _ in range(batch_size)]
        return qa_batch(tokenizer, [template.replace("{input}", q) for q, _ in pairs], [a for _, a in pairs])

    return next_batch
