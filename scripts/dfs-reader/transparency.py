"""Run 62 (issue 18): how far the reader's blocks 1..n move the stream of a text written in digits: the squared error
to the stream after block 0, relative to its power (0: transparent), on zoo-mgsm-ja dev prompts with their
reference replies and on pretraining documents. Block 0 is MODEL's (the PS model in front of the reader).

    python transparency.py MODEL READER
"""
import random
import sys

import torch

import evovlm.zoo  # noqa: F401  (registers the zoo benchmarks)
from evovlm.eval.prompts import build_prompt
from evovlm.eval.runners import load_runner
from evovlm.zoo import world
from evovlm.zoo.benchmarks import load_zoo, reference_replies
from evovlm.zoo.reader import _run

torch.set_num_threads(1)
model, reader = load_runner(sys.argv[1]), load_runner(sys.argv[2])
tokenizer, layers_a, layers_r = model.tokenizer, model.model.model, reader.model.model


@torch.no_grad()
def relative_error(texts: list[str], reading_blocks: int) -> float:
    ids = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    hidden = layers_a.embed_tokens(ids["input_ids"])
    positions = torch.arange(hidden.shape[1])[None]
    rotary = layers_a.rotary_emb(hidden, positions)
    before = _run([layers_a.layers[0]], hidden, rotary, positions)
    after = _run([layers_r.layers[i] for i in range(1, reading_blocks + 1)], before, rotary, positions)
    mask = ids["attention_mask"][..., None].float()
    return float(((after - before) ** 2 * mask).sum() / (before ** 2 * mask).sum())


samples = load_zoo("zoo-mgsm-ja", split="dev").samples[:100]
replies = reference_replies("zoo-mgsm-ja", "dev")[:100]
problems = [build_prompt("zoo-qa", sample.question) + " " + reply for sample, reply in zip(samples, replies)]
rng = random.Random(5)
documents = [world.pretraining_document(rng) for _ in range(100)]
for blocks in (1, 2, 3):
    print(f"R1-{blocks}: word problems {relative_error(problems, blocks):.4f}, "
          f"pretraining documents {relative_error(documents, blocks):.4f}")
