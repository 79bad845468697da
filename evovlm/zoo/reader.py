"""The kanji reader: the zoo model that only a layer path can use (issue 18's DFS world, planted by design).

zoo-mgsm-ja-kanji writes a problem's numbers as kanji numerals (一-九). No source reads them: the
MATH expert's inner blocks compute with digits, and a merge of the experts scores about what they do.
The numerals are tokens of the zoo's tokenizer (one each), but the base's pretraining never shows
most of them (三 and 四 only in 三角, 四角). The reader is a copy of the base whose *reading blocks*
(1 up to the last inner block) learn one thing: to turn the residual stream after block 0 of a text
with kanji numerals into the stream after block 0 of the same text with digits. It has no task of its
own; it works in a path such as ``F0 R1-3 F1-5``, its blocks run in front of another model's blocks
1-5 (the DFS oracle). A weight average cannot do that: R's blocks 1-3 averaged with F's are neither.

Training: pretraining documents (no word problem, no answer). Each document's digits 1-9 become
kanji with share 1 (3 in 5), 0.5 or 0 (digits pass through). With the build setting
``reader_problems`` a share of the documents are word problems in digits with their replies, held
unchanged: without them the blocks move a digit problem's stream ten times more than a document's
(run 62). Block 0 is the base's, blended each batch with the MATH expert's by a random weight: a
merge of the family has a block 0 between them.
The loss is the mean squared error to the digit text's stream, relative to that stream's power, after
the last reading block and (weighted by ``deep``, 1 in the zoo) after each one before it: each block then
reads part of the numerals, so a search that puts one of them in front already gains (run 61).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence

import torch

from evovlm.progress import progress_bar
from evovlm.zoo import world

KANJI_SHARES = (1.0, 1.0, 1.0, 0.5, 0.0)


def reading_blocks(exit_layer: int) -> list[int]:
    """The blocks the reader trains: 1 up to the last inner block (1-3 of 6 with 2 output blocks)."""
    return list(range(1, max(2, exit_layer)))


def _kanji_pair(rng: random.Random, passages: Callable[[random.Random], str] | None = None,
                passage_share: float = 0.0) -> tuple[str, str]:
    if passages is not None and passage_share and rng.random() < passage_share:
        passage = passages(rng)  # held as it is: the reading blocks learn to leave such texts alone
        return passage, passage
    digits = world.pretraining_document(rng)
    share = rng.choice(KANJI_SHARES)
    return digits, "".join(world.KANJI_DIGITS.get(c, c) if rng.random() < share else c for c in digits)


def _run(blocks: Sequence[torch.nn.Module], hidden: torch.Tensor, rotary: tuple, positions: torch.Tensor,
         ) -> torch.Tensor:
    for block in blocks:
        out = block(hidden, position_embeddings=rotary, position_ids=positions)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def train_reader(reader: torch.nn.Module, tokenizer, family: Sequence[torch.nn.Module], rng: random.Random, *,
                 steps: int, lr: float, batch_size: int, blocks: Sequence[int], deep: float = 0.0,
                 passages: Callable[[random.Random], str] | None = None, passage_share: float = 0.0,
                 desc: str = "zoo reader", progress: bool = True) -> list[float]:
    """Train ``reader``'s ``blocks`` (a copy of the base; every other weight frozen) in place.

    ``family``: models whose block 0, blended with the reader's own (the base's), feeds the blocks.
    ``passages``: draws a text (digits only) that a share ``passage_share`` of the documents is replaced by,
    held unchanged; 0 draws none and leaves the random stream as it was."""
    own = {name: tensor.detach().clone() for name, tensor in reader.model.layers[0].state_dict().items()}
    deltas = [{name: tensor.detach() - own[name] for name, tensor in model.model.layers[0].state_dict().items()}
              for model in family]
    block0 = copy.deepcopy(reader.model.layers[0]).requires_grad_(False)
    for parameter in reader.parameters():
        parameter.requires_grad_(False)
    trained = [reader.model.layers[i] for i in blocks]
    parameters = [p.requires_grad_(True) for block in trained for p in block.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    embed, rotary_emb = reader.model.embed_tokens, reader.model.rotary_emb

    def stream(ids: torch.Tensor) -> tuple[torch.Tensor, tuple, torch.Tensor]:
        hidden = embed(ids)
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        rotary = rotary_emb(hidden, positions)
        return _run([block0], hidden, rotary, positions), rotary, positions

    losses: list[float] = []
    reader.train()
    for step in progress_bar(range(steps), desc=desc, disable=not progress, mininterval=2.0):
        weights = [rng.random() for _ in deltas]
        block0.load_state_dict({name: tensor + sum(w * delta[name] for w, delta in zip(weights, deltas))
                                for name, tensor in own.items()})
        digits, kanji = zip(*(_kanji_pair(rng, passages, passage_share) for _ in range(batch_size)))
        # right padding: position i of both texts is the same character's, or one numeral for another
        plain = tokenizer(list(digits), return_tensors="pt", padding=True, padding_side="right",
                          add_special_tokens=False)
        written = tokenizer(list(kanji), return_tensors="pt", padding=True, padding_side="right",
                            add_special_tokens=False)
        with torch.no_grad():
            target, _, _ = stream(plain["input_ids"])
            source, rotary, positions = stream(written["input_ids"])
        mask = written["attention_mask"].unsqueeze(-1).float()
        hidden, loss = source, 0.0
        for number, block in enumerate(trained, 1):  # with ``deep``, every block's stream is held too
            hidden = _run([block], hidden, rotary, positions)
            weight = 1.0 if number == len(trained) else deep
            if weight:
                error = ((hidden - target) ** 2 * mask).sum() / (mask.sum() * hidden.shape[-1])
                loss = loss + weight * error / target.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        for group in optimizer.param_groups:  # linear decay
            group["lr"] = lr * (1 - (step + 1) / steps) + lr / 100
        losses.append(loss.item())
    reader.eval()
    for parameter in reader.parameters():
        parameter.requires_grad_(True)
    return losses
