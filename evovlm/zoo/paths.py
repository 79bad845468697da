"""Hand-written DFS paths (issue 18): the DFS oracle (the reader's blocks in front of a model's), and the
legal hand paths over the JA and MATH experts that the DFS alone must reach (run 17's set).

Stored layers are numbered as :class:`evovlm.dfs.modeling.EvoDFSForCausalLM` stores them: model A's
``0..L-1``, then model B's ``L..2L-1``. A legal path starts with A's block 0 and ends with A's last
block, as the DFS genome makes every path (``evovlm.evolve.genome``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path


def oracle_path(num_layers: int, blocks: Sequence[int]) -> list[int]:
    """The DFS oracle of PS+DFS: A's block 0, the reader's (B's) ``blocks``, then A's blocks 1 to the end."""
    return [0, *(num_layers + block for block in blocks), *range(1, num_layers)]


def hand_paths(num_layers: int, inner: int) -> dict[str, list[int]]:
    """Legal paths one writes by hand from how the zoo is built (A = JA expert, B = MATH expert, whose
    skill lives in blocks 0 to ``inner`` - 1): B's inner blocks between A's first and A's output blocks,
    in a few variants (run 17 measured them first)."""
    last, b = num_layers - 1, num_layers  # b + i: B's block i
    a_out = list(range(inner, num_layers))
    paths = [
        [0, *range(b + 1, b + inner), *a_out],
        [0, *range(b, b + inner), *a_out],
        [0, *range(b + 1, b + inner), inner - 1, *a_out],
        [0, 1, *range(b + 2, b + inner), *a_out],
        [*range(inner - 1), b + inner - 1, *a_out],
        [*range(inner), *range(b + 1, b + inner), *a_out],
        [0, *range(b + 1, b + inner), last],
        [0, *range(b + 1, b + inner + 1), last],
    ]
    return {path_name(path, num_layers): path for path in paths}  # a tiny zoo may name one path twice


def path_name(path: Sequence[int], num_layers: int) -> str:
    """``[0, 7, 8, 9, 4, 5]`` with 6 layers -> ``A0 B1-3 A4-5``: runs of consecutive blocks of one model."""
    runs: list[tuple[str, int, int]] = []
    for index in path:
        model, block = ("A", index) if index < num_layers else ("B", index - num_layers)
        if runs and runs[-1][0] == model and runs[-1][2] == block - 1:
            runs[-1] = (model, runs[-1][1], block)
        else:
            runs.append((model, block, block))
    return " ".join(f"{m}{lo}" if lo == hi else f"{m}{lo}-{hi}" for m, lo, hi in runs)


def save_dfs_path(model_a: str | Path, model_b: str | Path, path: Sequence[int], out: str | Path) -> Path:
    """Write the DFS model running ``path`` over ``model_a`` and ``model_b`` (every scale 1) to ``out``."""
    from evovlm.dfs.modeling import EvoDFSForCausalLM
    from evovlm.eval.runners import load_runner

    runner_a, runner_b = load_runner(model_a), load_runner(model_b)
    model = EvoDFSForCausalLM.from_models(runner_a.model, runner_b.model, list(path), [1.0] * len(path)).pruned()
    model.save_pretrained(out)
    runner_a.tokenizer.save_pretrained(out)
    return Path(out)


def best_hand_path(model_a: str | Path, model_b: str | Path, num_layers: int, inner: int, scratch: Path,
                   score: Callable[[str, Path], float]) -> tuple[str, Path]:
    """(name, saved model) of the hand path that ``score`` (the dev split's ``acc_ja``) rates highest;
    the first listed wins a tie."""
    scored = []
    for number, (name, path) in enumerate(hand_paths(num_layers, inner).items()):
        saved = save_dfs_path(model_a, model_b, path, Path(scratch) / f"hand-path-{number}")
        scored.append((score(name, saved), -number, name, saved))
    _, _, name, saved = max(scored)
    return name, saved
