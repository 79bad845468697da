"""Shared by the run 62-68 scripts: each generation's best candidate of a DFS run, the hand paths as models, and
one DFS model over the experts to run paths in."""
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evovlm.zoo.paths import hand_paths, save_dfs_path


def generation_bests(run: Path) -> dict[int, tuple[float, list[float]]]:
    """generation -> (fitness, genes) of its best scored candidate, from the run's history.jsonl."""
    best: dict[int, tuple[float, list[float]]] = {}
    for line in open(Path(run) / "history.jsonl"):
        record = json.loads(line)
        if record.get("type") == "candidate" and record.get("fitness") is not None:
            generation = record["generation"]
            if generation not in best or record["fitness"] > best[generation][0]:
                best[generation] = (record["fitness"], record["genome"])
    return best


def hand_path_models(zoo: Path, scratch: Path) -> Iterator[tuple[str, Path]]:
    """(name, saved DFS model) of each legal hand path over the zoo's JA (A) and MATH (B) experts."""
    for number, (name, path) in enumerate(hand_paths(6, 4).items()):
        yield name, save_dfs_path(zoo / "ja", zoo / "math", path, Path(scratch) / f"hand-{number}")


def expert_dfs(zoo: Path) -> tuple[Any, Any]:
    """(DFS model over the zoo's JA (A) and MATH (B) experts, to be given paths with ``set_path``; JA's tokenizer)."""
    from evovlm.dfs.modeling import EvoDFSForCausalLM
    from evovlm.eval.runners import load_runner

    runner_a, runner_b = load_runner(str(Path(zoo) / "ja")), load_runner(str(Path(zoo) / "math"))
    return EvoDFSForCausalLM.from_models(runner_a.model, runner_b.model), runner_a.tokenizer


def each_model(zoo: Path, evolved: list[str]) -> Iterator[tuple[str, Any, Any]]:
    """(name, model, tokenizer) of each hand path, then of each ``evolved`` DFS model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import evovlm.dfs.auto  # noqa: F401  (registers the DFS model class)

    with tempfile.TemporaryDirectory() as scratch:
        for name, saved in [*hand_path_models(zoo, Path(scratch)), *((path, path) for path in evolved)]:
            yield name, AutoModelForCausalLM.from_pretrained(saved).eval(), AutoTokenizer.from_pretrained(saved)
