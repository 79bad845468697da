"""Reduced fitness: score each candidate on a few items of the fitness set, estimate the rest.

After MERGE³ (Mencattini et al., 2025) and tinyBenchmarks (Polo et al., 2024): before the search,
a few *calibration* candidates (each source as the merge renders it alone, the search's start and
some random merges, all seeded) are scored item by item on the whole fitness set. From that table

- a subset of ``size`` items is chosen (``method``):
  ``random``; ``stratified`` (one item from each of ``size`` equal bands of the items sorted by how
  many calibration candidates got them right); ``entropy`` (the items the calibration candidates
  disagree on most, Evo-L2S's idea); ``irt`` (a two-parameter logistic IRT model is fitted, and the
  items nearest the centres of ``size`` k-means clusters of their (discrimination, difficulty) are
  kept: each stands for the items like it, tinyBenchmarks' anchor points);
- with ``estimator: irt``, a candidate's fitness is not the subset's mean but an estimate of its
  score on the whole set: its ability theta is fitted on the subset items (MAP, standard normal
  prior), and the items it did not see count with their fitted probability of being right
  (the p-IRT estimator). ``estimator: mean`` is the plain mean over the subset.

The subset is chosen for the main score, the metric's key with the largest weight. Only a
right/wrong score (0 or 100 per item: ``acc_ja``, ``content_ja``) can go through the IRT model; a
graded one (ROUGE) takes ``estimator: mean`` and a random, stratified or entropy (most varied)
subset. The other keys of a weighted metric (a ROUGE tie-breaker) are subset means.

This module owns ``subset.json`` in a stage folder, so a resumed run reuses the same items and
the same fitted model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from evovlm.errors import EvoVLMError
from evovlm.io.atomic import write_atomic

SUBSET_NAME = "subset.json"
SUBSET_FORMAT = 1
METHODS = ("irt", "entropy", "stratified", "random")
ESTIMATORS = ("irt", "mean")


# -- the IRT model ---------------------------------------------------------------------------
@dataclass
class ItemModel:
    """2PL items: P(right | theta) = sigmoid(discrimination * (theta - difficulty))."""

    discrimination: list[float]
    difficulty: list[float]

    def probability(self, theta: float, items: Sequence[int] | None = None) -> np.ndarray:
        a, b = np.asarray(self.discrimination), np.asarray(self.difficulty)
        if items is not None:
            a, b = a[list(items)], b[list(items)]
        return 1.0 / (1.0 + np.exp(-np.clip(a * (theta - b), -30.0, 30.0)))


def fit_items(responses: np.ndarray, *, steps: int = 300) -> tuple[ItemModel, np.ndarray]:
    """Joint MAP fit of a 2PL model to a respondents x items table of 0/1: (items, abilities).

    Priors keep it finite with a handful of respondents and items that all of them get right or
    wrong: theta ~ N(0, 1), difficulty ~ N(0, 2^2), log discrimination ~ N(0, 0.5^2)."""
    import torch

    table = torch.as_tensor(np.asarray(responses, dtype=np.float64))
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 1:
        raise EvoVLMError(f"an IRT fit needs at least 2 respondents and 1 item, got a table of shape "
                          f"{tuple(table.shape)}")
    respondents, items = table.shape
    theta = torch.zeros(respondents, dtype=torch.float64, requires_grad=True)
    difficulty = torch.zeros(items, dtype=torch.float64, requires_grad=True)
    log_discrimination = torch.zeros(items, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([theta, difficulty, log_discrimination], max_iter=steps,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        logits = log_discrimination.exp()[None, :] * (theta[:, None] - difficulty[None, :])
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, table, reduction="sum")
        prior = (theta.pow(2).sum() / 2 + difficulty.pow(2).sum() / (2 * 4.0)
                 + log_discrimination.pow(2).sum() / (2 * 0.25))
        value = nll + prior
        value.backward()
        return value

    optimizer.step(loss)
    model = ItemModel(log_discrimination.detach().exp().tolist(), difficulty.detach().tolist())
    return model, theta.detach().numpy()


def fit_ability(model: ItemModel, items: Sequence[int], right: Sequence[float], *, iterations: int = 50) -> float:
    """MAP ability (standard normal prior) from 0/1 answers to ``items``: Newton's method, 1-D."""
    a = np.asarray(model.discrimination)[list(items)]
    y = np.asarray(right, dtype=float)
    theta = 0.0
    for _ in range(iterations):
        p = model.probability(theta, items)
        gradient = float(np.sum(a * (y - p))) - theta
        curvature = -float(np.sum(a * a * p * (1 - p))) - 1.0
        step = gradient / curvature
        theta -= step
        if abs(step) < 1e-10:
            break
    return theta


# -- choosing the items ----------------------------------------------------------------------
def choose_items(method: str, responses: np.ndarray, size: int, seed: int,
                 model: ItemModel | None = None) -> list[int]:
    """``size`` item indices (sorted) chosen from a respondents x items table of scores in [0, 1] (0/1 answers
    for ``irt``)."""
    table = np.asarray(responses, dtype=float)
    n_items = table.shape[1]
    if not 1 <= size <= n_items:
        raise EvoVLMError(f"fitness.subset.size must be between 1 and the {n_items} items of the fitness set, "
                          f"got {size}")
    rng = np.random.default_rng(seed)
    tie_break = rng.random(n_items)  # seeded, so equal items are picked the same way every time
    if method == "random":
        chosen = rng.choice(n_items, size=size, replace=False)
    elif method == "stratified":
        order = np.lexsort((tie_break, table.mean(axis=0)))  # easiest last
        chosen = [band[rng.integers(len(band))] for band in np.array_split(order, size)]
    elif method == "entropy":
        disagreement = table.var(axis=0)  # p(1 - p) for right/wrong: the binary entropy's order, without the logs
        chosen = np.lexsort((tie_break, -disagreement))[:size]
    elif method == "irt":
        if model is None:
            raise EvoVLMError("the irt subset needs a fitted item model (and right/wrong scores)")
        chosen = _anchor_items(model, size, rng)
    else:
        raise EvoVLMError(f"fitness.subset.method must be one of {', '.join(METHODS)}, got {method!r}")
    return sorted(int(item) for item in chosen)


def _anchor_items(model: ItemModel, size: int, rng: np.random.Generator, rounds: int = 50) -> list[int]:
    """The items nearest the centres of ``size`` k-means clusters of standardised (log a, b)."""
    points = np.stack([np.log(model.discrimination), model.difficulty], axis=1)
    points = (points - points.mean(axis=0)) / np.maximum(points.std(axis=0), 1e-9)
    centres = points[rng.choice(len(points), size=size, replace=False)]
    for _ in range(rounds):
        nearest = np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        moved = np.array([points[nearest == k].mean(axis=0) if np.any(nearest == k) else centres[k]
                          for k in range(size)])
        if np.allclose(moved, centres):
            break
        centres = moved
    chosen: list[int] = []
    for centre in centres:  # each centre's nearest item not taken yet: always ``size`` distinct items
        distance = ((points - centre) ** 2).sum(-1)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    return chosen


# -- the plan a run keeps --------------------------------------------------------------------
@dataclass
class SubsetPlan:
    """What the workers need to score a candidate on the subset, and how it was chosen."""

    method: str
    size: int
    seed: int
    estimator: str
    n_items: int  # the whole fitness set
    items: list[int]
    key: str  # the score that goes through the IRT model
    weights: dict[str, float]
    model: ItemModel | None = None
    calibration: list[dict] = field(default_factory=list)  # {"label", "genome", "fitness", "right"} per candidate
    settings: dict = field(default_factory=dict)  # the config's subset section and fitness set, checked on resume

    def estimate(self, columns: dict[str, list[float]]) -> float:
        """The fitness from each score's values on the subset items (in ``items`` order)."""
        total = 0.0
        for key, weight in self.weights.items():
            values = np.asarray(columns[key], dtype=float)
            if len(values) != len(self.items):
                raise ValueError(f"{len(values)} values of {key} for a subset of {len(self.items)} items")
            if key == self.key and self.estimator == "irt":
                total += weight * 100.0 * self.full_set_share(values / 100.0)
            else:
                total += weight * float(values.mean())
        return total

    def full_set_share(self, right: np.ndarray) -> float:
        """p-IRT: the subset's right answers plus the fitted probability of every unseen item."""
        assert self.model is not None
        theta = fit_ability(self.model, self.items, right)
        seen = set(self.items)
        unseen = [i for i in range(self.n_items) if i not in seen]
        return (float(np.sum(right)) + float(np.sum(self.model.probability(theta, unseen)))) / self.n_items

    def to_json(self) -> str:
        data = {"format_version": SUBSET_FORMAT, **asdict(self)}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def read(cls, path: Path) -> "SubsetPlan":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("format_version", None) != SUBSET_FORMAT:
                raise ValueError(f"not format {SUBSET_FORMAT}")
            model = data.pop("model")
            return cls(**data, model=None if model is None else ItemModel(**model))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise EvoVLMError(f"{path} is not a readable subset file ({exc}); delete it to choose the subset "
                              f"again") from None

    def write(self, stage_dir: Path) -> Path:
        return write_atomic(stage_dir / SUBSET_NAME, self.to_json())


def main_key(weights: dict[str, float]) -> str:
    """The score the subset is chosen for: the heaviest key (the first of equals)."""
    return max(weights, key=weights.__getitem__)  # max keeps the first of equal keys


def build_plan(settings: dict, weights: dict[str, float], calibration: list[dict]) -> SubsetPlan:
    """Choose the items and fit the model from the calibration candidates' per-item scores.

    ``settings``: the subset section (method, size, seed, estimator) plus what identifies the fitness
    set; each calibration entry has ``right``: its 0/100 values of the main key on every item."""
    key = main_key(weights)
    table = np.asarray([entry["right"] for entry in calibration], dtype=float) / 100.0
    needs_model = settings["method"] == "irt" or settings["estimator"] == "irt"
    if needs_model and not np.all((table == 0) | (table == 1)):
        raise EvoVLMError(f"fitness.subset: the IRT model needs a right/wrong score per item, and {key} takes "
                          f"other values (a ROUGE score?): weight a right/wrong score (acc_ja, content_ja) highest, "
                          f"or use estimator: mean with a random, stratified or entropy subset")
    model = fit_items(table)[0] if needs_model else None
    if model is not None and any(math.isnan(x) for x in model.difficulty):  # before k-means works on them
        raise EvoVLMError("the IRT fit of the calibration candidates did not converge (NaN)")
    items = choose_items(settings["method"], table, settings["size"], settings["seed"], model)
    return SubsetPlan(method=settings["method"], size=settings["size"], seed=settings["seed"],
                      estimator=settings["estimator"], n_items=table.shape[1], items=items, key=key,
                      weights=dict(weights), model=model, calibration=calibration, settings=dict(settings))
