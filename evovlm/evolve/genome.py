"""Genomes: flat gene vectors <-> merge recipes (PS) and layer paths (DFS).

Genes live in the optimiser's ``bounds`` (default [0, 1]); each maps linearly onto its
parameter's range: ``value = low + (gene - b0) / (b1 - b0) * (high - low)``.

PS: one ``weight`` and (for TIES/DARE methods) one ``density`` per source model and layer
group; values a config pins are not genes. Groups are the whole model (``group_size:
model``: EvoLLM-JP's 3 models x 2 parameters = 6 genes) or runs of N decoder blocks
(``layers.0-3``, ``layers.4-7``, ...) plus ``default`` for the embeddings, final norm and head.

DFS (the paper's data-flow space): models A and B give M layers, numbered A's first. The
T = M x r *layer slots* lay the M layers out in order, r times; slot t holds layer t mod M and
is on when its indicator gene is above the middle of the bounds (the paper's I_t > 0). The
path is the layers of the slots that are on, in slot order, made to start with A's first
block and end with A's last (prepended/appended when missing). Then M x M scale genes give
W: the hidden state entering layer j from layer i is multiplied by W[i, j].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from evovlm.errors import EvoVLMError
from evovlm.evolve.config import DFSConfig, PSConfig

ON, OFF = 0.75, 0.25  # where encode() puts an indicator gene, as a share of the bounds


def num_decoder_layers(ref: str) -> int:
    """Decoder blocks of a model's language tower, from its config.json (no weights read)."""
    from evovlm.arch import text_config
    from evovlm.io.checkpoint import read_model_config
    from evovlm.io.resolve import resolve_model_path

    config = text_config(read_model_config(resolve_model_path(ref), ref))
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int) or layers < 1:
        raise EvoVLMError(f"{ref}: config.json has no num_hidden_layers")
    return layers


def layer_groups(group_size: int | str, num_layers: int) -> list[str]:
    """Recipe selectors, one per gene group: ``default`` alone, or block runs then ``default``."""
    if group_size == "model":
        return ["default"]
    size = int(group_size)
    groups = []
    for start in range(0, num_layers, size):
        stop = min(start + size, num_layers) - 1
        groups.append(f"layers.{start}" if start == stop else f"layers.{start}-{stop}")
    return groups + ["default"]


class _Affine:
    """Gene <-> value maps between the optimiser's bounds and a parameter range."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.b0, self.b1 = float(bounds[0]), float(bounds[1])

    def value(self, gene: float, low: float, high: float) -> float:
        return low + (float(gene) - self.b0) / (self.b1 - self.b0) * (high - low)

    def gene(self, value: float, low: float, high: float) -> float:
        return self.b0 + (float(value) - low) / (high - low) * (self.b1 - self.b0)


class PSGenome(_Affine):
    """Gene vector <-> :class:`~evovlm.merge.recipe.Recipe`."""

    def __init__(self, config: PSConfig, *, num_layers: int | None = None,
                 bounds: Sequence[float] = (0.0, 1.0)) -> None:
        from evovlm.merge.methods import METHODS

        super().__init__(bounds)
        self.config = config
        self.uses_density = METHODS[config.method].uses_density
        if num_layers is None and config.group_size != "model":
            num_layers = num_decoder_layers(config.target or config.base_model or config.models[0].model)
        self.groups = layer_groups(config.group_size, num_layers or 0)
        parameters = ("weight", "density") if self.uses_density else ("weight",)
        # (model index, parameter, group) per gene, model-major: all of model 0's genes first.
        self.layout = [(index, parameter, group) for index, entry in enumerate(config.models)
                       for parameter in parameters if getattr(entry, parameter) is None
                       for group in self.groups]

    @property
    def size(self) -> int:
        return len(self.layout)

    def gene_names(self) -> list[str]:
        return [f"models[{i}].{p}@{g}" for i, p, g in self.layout]

    def _range(self, parameter: str) -> tuple[float, float]:
        return self.config.weight_range if parameter == "weight" else self.config.density_range

    def decode(self, genes: Sequence[float]):
        """The recipe a gene vector stands for."""
        from evovlm.merge.recipe import Recipe
        from evovlm.schema import parse

        genes = np.asarray(genes, dtype=float)
        if genes.shape != (self.size,):
            raise ValueError(f"expected {self.size} genes, got shape {genes.shape}")
        values: dict[tuple[int, str], dict[str, float]] = {}
        for gene, (index, parameter, group) in zip(genes, self.layout):
            value = self.value(gene, *self._range(parameter))
            if parameter == "density":
                value = min(max(value, 0.0), 1.0)  # genes beyond the bounds (never from CMA-ES)
            values.setdefault((index, parameter), {})[group] = value
        specs = []
        for index, entry in enumerate(self.config.models):
            params = {}
            for parameter in ("weight", "density"):
                pinned = getattr(entry, parameter)
                per_group = values.get((index, parameter))
                if per_group is None:
                    params[parameter] = 1.0 if pinned is None else pinned
                else:
                    params[parameter] = per_group["default"] if len(per_group) == 1 else per_group
            specs.append({"model": entry.model, **params})
        recipe = {"method": self.config.method, "models": specs, "base_model": self.config.base_model,
                  "target": self.config.target, "seed": self.config.merge_seed, "parameters": self.config.parameters}
        return parse(Recipe, recipe, "config", ("ps",))

    def encode(self, recipe) -> np.ndarray:
        """The gene vector of a recipe in this genome's space (values read per group)."""
        from evovlm.merge.recipe import resolve_param

        if len(recipe.models) != len(self.config.models):
            raise ValueError(f"recipe has {len(recipe.models)} models, the genome {len(self.config.models)}")
        return np.array([self.gene(resolve_param(getattr(recipe.models[index], parameter), group),
                                   *self._range(parameter))
                         for index, parameter, group in self.layout], dtype=float)

    def describe(self, genes: Sequence[float]) -> dict:
        return self.decode(genes).to_dict()

    def initial_mean(self, mean: float) -> np.ndarray:
        return np.full(self.size, float(mean))

    def source_genes(self) -> list[tuple[str, np.ndarray]]:
        """(model, genes) of each source alone (weight 1, the others 0, density 1), where this space holds it.

        Scored as baselines: a merge that cannot beat its sources has not earned its place. A source is left out
        when its one-hot recipe lies outside the ranges or pins, or lambda is not 1 (then it is not the source)."""
        if float(self.config.parameters.get("lambda", 1.0)) != 1.0:
            return []
        found = []
        for source, entry in enumerate(self.config.models):
            wanted = {(index, "weight"): 1.0 if index == source else 0.0 for index in range(len(self.config.models))}
            wanted.update({(index, "density"): 1.0 for index in range(len(self.config.models))})
            pins_agree = all(getattr(pinned, key) in (None, wanted[(index, key)])
                             for index, pinned in enumerate(self.config.models) for key in ("weight", "density"))
            in_range = all(self._range(parameter)[0] <= wanted[(index, parameter)] <= self._range(parameter)[1]
                           for index, parameter, _ in self.layout)
            if pins_agree and in_range:
                genes = np.array([self.gene(wanted[(index, parameter)], *self._range(parameter))
                                  for index, parameter, _ in self.layout], dtype=float)
                found.append((entry.model, genes))
        return found

    def check(self, where: str) -> None:
        """Fail early, with the config's location, on a space no recipe can come from."""
        if self.size == 0:
            raise EvoVLMError(f"{where}: every weight and density is pinned: there is nothing to evolve")
        self.decode(self.initial_mean((self.b0 + self.b1) / 2))


@dataclass(frozen=True)
class DFSCandidate:
    """A decoded DFS genome: layers (0..M-1, A's first) in path order, and the scale entering each."""

    path: tuple[int, ...]
    scales: tuple[float, ...]


class DFSGenome(_Affine):
    """Gene vector <-> (layer slots on/off, scale matrix W) -> :class:`DFSCandidate`."""

    def __init__(self, config: DFSConfig, layers_a: int, layers_b: int, *,
                 bounds: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__(bounds)
        self.config = config
        self.layers_a, self.layers_b = layers_a, layers_b
        self.num_layers = layers_a + layers_b  # M
        self.num_slots = self.num_layers * config.repeats  # T
        self.with_scales = config.scales == "matrix"
        self.threshold = (self.b0 + self.b1) / 2
        self.origins = [f"A:{i}" for i in range(layers_a)] + [f"B:{i}" for i in range(layers_b)]

    @property
    def size(self) -> int:
        return self.num_slots + (self.num_layers ** 2 if self.with_scales else 0)

    def gene_names(self) -> list[str]:
        names = [f"slot[{t}]={self.origins[t % self.num_layers]}" for t in range(self.num_slots)]
        if self.with_scales:
            names += [f"W[{i},{j}]" for i in range(self.num_layers) for j in range(self.num_layers)]
        return names

    def genotype(self, genes: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(slots on, bool [T]; scale matrix W, [M, M]) of a gene vector."""
        genes = np.asarray(genes, dtype=float)
        if genes.shape != (self.size,):
            raise ValueError(f"expected {self.size} genes, got shape {genes.shape}")
        slots = genes[:self.num_slots] > self.threshold
        if not self.with_scales:
            return slots, np.ones((self.num_layers, self.num_layers))
        low, high = self.config.scale_range
        matrix = np.array([self.value(g, low, high) for g in genes[self.num_slots:]])
        return slots, matrix.reshape(self.num_layers, self.num_layers)

    def encode(self, slots: Sequence[bool], matrix: np.ndarray | None = None) -> np.ndarray:
        """Genes for a slot selection and W (default all ones): the inverse of :meth:`genotype`."""
        slots = np.asarray(slots, dtype=bool)
        if slots.shape != (self.num_slots,):
            raise ValueError(f"expected {self.num_slots} slots, got shape {slots.shape}")
        width = self.b1 - self.b0
        indicator = np.where(slots, self.b0 + ON * width, self.b0 + OFF * width)
        if not self.with_scales:
            return indicator
        matrix = np.ones((self.num_layers, self.num_layers)) if matrix is None else np.asarray(matrix, dtype=float)
        low, high = self.config.scale_range
        return np.concatenate([indicator, [self.gene(v, low, high) for v in matrix.reshape(-1)]])

    def decode(self, genes: Sequence[float]) -> DFSCandidate:
        slots, matrix = self.genotype(genes)
        path = [t % self.num_layers for t in np.flatnonzero(slots)]
        first, last = 0, self.layers_a - 1  # fixed points: A's first and last blocks
        if not path or path[0] != first:
            path.insert(0, first)
        if path[-1] != last:
            path.append(last)
        scales = [1.0] + [float(matrix[i, j]) for i, j in zip(path[:-1], path[1:])]
        return DFSCandidate(tuple(int(i) for i in path), tuple(scales))

    def identity_slots(self) -> np.ndarray:
        """Model A itself: A's layers in the middle repetition (``init: a``) or the first (``a-first``).

        In the middle, any B layer can be put in front of A's layers (an earlier repetition) or
        behind them (a later one) by one indicator flip, and A's own layers dropped one flip at a
        time: on the seed-1 zoo, A -> A0 B1 A0-5 -> A0 B1-2 A0-5 -> ... -> A0 B1-2 A3-5 improves
        the fitness at every flip (-1.04, -0.98, -0.62, -0.61, -0.60, -0.48). From the first
        repetition nothing can go in front of A's layers, and such climbs are out of reach.
        """
        slots = np.zeros(self.num_slots, dtype=bool)
        start = 0 if self.config.init == "a-first" else self.num_layers * (self.config.repeats // 2)
        slots[start:start + self.layers_a] = True
        return slots

    @property
    def start_is_a_model(self) -> bool:
        """``init: a`` starts at model A itself, worth scoring as a candidate (see evolve.search)."""
        return self.config.init != "uniform"

    def initial_mean(self, mean: float) -> np.ndarray:
        if self.start_is_a_model:
            low, high = self.config.scale_range
            unit = np.full((self.num_layers, self.num_layers), min(max(1.0, low), high))  # W = 1 when in range
            return self.encode(self.identity_slots(), unit)
        return np.full(self.size, float(mean))

    def describe(self, genes: Sequence[float]) -> dict:
        candidate = self.decode(genes)
        return {"path": [self.origins[i] for i in candidate.path], "scales": [round(s, 6) for s in candidate.scales]}
