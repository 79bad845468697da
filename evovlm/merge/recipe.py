"""Merge recipes: EvoVLM's own YAML format, mergekit YAML import, and export to mergekit.

Own format::

    method: dare_ties            # linear | task_arithmetic | ties | dare_linear | dare_ties
    base_model: mistralai/Mistral-7B-v0.1
    target: llava-hf/llava-v1.6-mistral-7b-hf   # architecture, vision tower, projector, tokenizer
    seed: 0                      # DARE randomness
    parameters: {lambda: 1.0, normalize: false}
    models:
      - model: llava-hf/llava-v1.6-mistral-7b-hf
        weight: 0.6
        density: {default: 0.5, embed: 1.0, layers.0-15: 0.4}

``weight`` and ``density`` are numbers or maps from layer-group selectors to numbers.
Selectors: ``default``, ``embed``, ``norm``, ``lm_head``, ``layers`` (all blocks),
``layers.N`` and ``layers.A-B`` (inclusive). The most specific selector wins:
``layers.N`` > the narrowest ``layers.A-B`` > ``layers`` > a named group > ``default``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, field_validator, model_validator

from evovlm.dtypes import DTYPE_NAMES
from evovlm.errors import EvoVLMError
from evovlm.io.yamlfile import read_yaml_file
from evovlm.merge.methods import ALIASES, METHODS
from evovlm.schema import NonNegativeInt, Section, finite, parse

ParamValue = Union[float, dict]
_RANGE = re.compile(r"^layers\.(\d+)-(\d+)$")
_SINGLE = re.compile(r"^layers\.(\d+)$")
_NAMED = {"default", "embed", "norm", "lm_head", "layers"}
_OPTION_KEYS = {"lambda", "normalize", "rescale"}


def _number(value: Any, where: str = "") -> float:
    """A finite number: a weight of .inf or .nan would write an all-inf or all-NaN model."""
    if not finite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}" if where else
                         f"expected a finite number, got {value!r}")
    return float(value)


def layer_span(selector: str) -> tuple[int, int] | None:
    """(first, last) layer of ``layers.N`` or ``layers.A-B``; None for any other selector."""
    if single := _SINGLE.match(selector):
        return int(single.group(1)), int(single.group(1))
    if span := _RANGE.match(selector):
        return int(span.group(1)), int(span.group(2))
    return None


def _param(value: Any) -> ParamValue:
    """A number, or a one-level map of layer-group selectors to numbers."""
    if not isinstance(value, dict):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _number(value)
        raise ValueError(f"expected a number or a map of layer groups to numbers, got {value!r}")
    checked = {}
    for key, number in value.items():
        key = str(key)
        span = layer_span(key)
        if key not in _NAMED and span is None:
            raise ValueError(f"unknown layer-group selector {key!r} (use default, embed, norm, lm_head, layers, "
                             "layers.N or layers.A-B)")
        if span and span[0] > span[1]:
            raise ValueError(f"reversed layer range {key!r}; write layers.{span[1]}-{span[0]}")
        checked[key] = _number(number, f".{key}")  # one level: no nested maps
    return checked


def canonical_method(method: Any) -> str:
    """A merge method's registry name, from any spelling people use (``dare-ties``)."""
    name = ALIASES.get(str(method), str(method))
    if name not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
    return name


class SourceSpec(Section):
    model: str
    weight: ParamValue = 1.0
    density: ParamValue = 1.0

    @field_validator("model", mode="before")
    @classmethod
    def _ref(cls, model: Any) -> str:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"expected a model (a directory, zoo:NAME or an HF repo id), got {model!r}")
        return model

    @field_validator("weight", "density", mode="before")
    @classmethod
    def _value(cls, value: Any) -> ParamValue:
        return _param(value)

    @field_validator("density")
    @classmethod
    def _share(cls, density: ParamValue) -> ParamValue:
        for key, value in (density.items() if isinstance(density, dict) else [("", density)]):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{'.' + key if key else ''}: {value} outside [0, 1]".lstrip(": "))
        return density


class Recipe(Section):
    method: str
    models: list[SourceSpec] = Field(min_length=1)
    base_model: Optional[str] = None
    target: Optional[str] = None
    seed: NonNegativeInt = 0
    options: dict[str, Any] = Field(default_factory=dict, alias="parameters")
    dtype: Optional[Literal[tuple(DTYPE_NAMES)]] = None  # type: ignore[valid-type]
    origin: Literal["evovlm", "mergekit"] = "evovlm"  # mergekit: DARE then rescales by L1 norm, as mergekit does

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "method" not in data:
                raise ValueError("missing 'method' (or mergekit's 'merge_method')")
            if not isinstance(data.get("models"), list) or not data["models"]:
                raise ValueError("'models' must be a non-empty list")
        return data

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, method: Any) -> str:
        return canonical_method(method)

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, options: Any) -> dict:
        """lambda: a finite number; normalize: true/false; rescale: inverse, l1 or false."""
        if not isinstance(options or {}, dict):
            raise ValueError("a mapping, e.g. {lambda: 1.0, normalize: false}")
        options = dict(options or {})
        unknown = sorted(set(options) - _OPTION_KEYS)
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {sorted(_OPTION_KEYS)}")
        if "lambda" in options:
            options["lambda"] = _number(options["lambda"], ".lambda")
        if "normalize" in options and not isinstance(options["normalize"], bool):
            raise ValueError(f".normalize: must be true or false, got {options['normalize']!r}")
        if options.get("rescale") not in (None, "inverse", "l1", True, False):
            raise ValueError(f".rescale: must be 'inverse', 'l1' or false, got {options['rescale']!r}")
        return options

    @model_validator(mode="after")
    def _base(self) -> "Recipe":
        if METHODS[self.method].needs_base and not self.base_model:
            raise ValueError(f"method {self.method} needs a base_model (task vectors are taken against it)")
        return self

    # -- parameter resolution ----------------------------------------------------
    def value(self, source_index: int, parameter: str, group: str) -> float:
        return resolve_param(getattr(self.models[source_index], parameter), group)

    def target_ref(self) -> str:
        """The model whose architecture and non-language tensors the output keeps."""
        return self.target or self.base_model or self.models[0].model

    def method_options(self) -> dict[str, Any]:
        options = {"lam": float(self.options.get("lambda", 1.0))}
        if "normalize" in self.options:
            options["normalize"] = bool(self.options["normalize"])
        if "rescale" in self.options:
            rescale = self.options["rescale"]
            options["rescale"] = "inverse" if rescale is True else rescale
        elif self.origin == "mergekit" and METHODS[self.method].random:
            options["rescale"] = "l1"
        return options

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"method": self.method}
        for key in ("base_model", "target"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        data["seed"] = self.seed
        if self.options:
            data["parameters"] = dict(self.options)
        if self.dtype:
            data["dtype"] = self.dtype
        if self.origin != "evovlm":
            data["origin"] = self.origin
        data["models"] = [{"model": s.model, "weight": s.weight, "density": s.density} for s in self.models]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def resolve_param(value: ParamValue, group: str) -> float:
    """The value of a (possibly per-group) parameter for one layer group."""
    if not isinstance(value, dict):
        return float(value)
    if group in value:
        return float(value[group])
    single = _SINGLE.match(group)
    if single:
        layer = int(single.group(1))
        ranges = [(int(m.group(2)) - int(m.group(1)), key) for key in value
                  if (m := _RANGE.match(str(key))) and int(m.group(1)) <= layer <= int(m.group(2))]
        if ranges:
            return float(value[min(ranges)[1]])
        if "layers" in value:
            return float(value["layers"])
    if "default" in value:
        return float(value["default"])
    raise EvoVLMError(f"no value for layer group {group!r} in {value!r}: add a 'default' entry")


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe file in EvoVLM's own format or mergekit's (detected by ``merge_method``)."""
    return recipe_from_dict(read_yaml_file(path, "recipe file"), where=str(path))


def recipe_from_dict(data: Any, where: str = "recipe") -> Recipe:
    if isinstance(data, dict) and "merge_method" in data:
        return parse(Recipe, _from_mergekit(data, where), where)
    return parse(Recipe, data, where)


# -- mergekit ------------------------------------------------------------------------
_MERGEKIT_METHODS = {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear"}
_MERGEKIT_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "seed", "target"}
# Keys that do not change the weights; the tokenizer always comes from the target.
_MERGEKIT_IGNORED = {"tokenizer_source", "tokenizer", "chat_template", "name", "out_dtype"}


def _mergekit_scalar(value: Any, where: str) -> Any:
    if isinstance(value, dict) or isinstance(value, list):
        raise EvoVLMError(f"{where}: only scalar values are supported when reading mergekit configs "
                          f"(got {value!r}); write per-layer values as an EvoVLM recipe with layer-group maps")
    return value  # the recipe's own checks (a finite number, density in [0, 1]) follow


def _from_mergekit(data: dict, where: str) -> dict:
    """A mergekit config as an EvoVLM recipe document (``origin: mergekit``), checked as one after."""
    method = str(data["merge_method"])
    if method not in _MERGEKIT_METHODS:
        raise EvoVLMError(f"{where}: mergekit method {method!r} is not supported; supported: "
                          f"{', '.join(sorted(_MERGEKIT_METHODS))}")
    if "slices" in data:
        raise EvoVLMError(f"{where}: mergekit 'slices' configs are not supported; use 'models'")
    unknown = set(data) - _MERGEKIT_KEYS - _MERGEKIT_IGNORED
    if unknown:
        raise EvoVLMError(f"{where}: mergekit keys {sorted(unknown)} are not supported")
    base = data.get("base_model")
    models = []
    for index, entry in enumerate(data.get("models") or []):
        if not isinstance(entry, dict) or "model" not in entry:
            raise EvoVLMError(f"{where}: models[{index}] needs a 'model' key")
        if base is not None and entry["model"] == base and method != "linear":
            continue  # mergekit lets the base appear among the models; it contributes no task vector
        params = entry.get("parameters") or {}
        if not isinstance(params, dict) or set(params) - {"weight", "density"}:
            raise EvoVLMError(f"{where}: models[{index}].parameters supports weight and density only, got {params!r}")
        if "weight" not in params:
            raise EvoVLMError(f"{where}: models[{index}] has no parameters.weight (mergekit requires it)")
        models.append({"model": entry["model"],
                       **{key: _mergekit_scalar(params[key], f"{where}: models[{index}].{key}")
                          for key in ("weight", "density") if key in params}})
    if not models:
        raise EvoVLMError(f"{where}: no models to merge")
    options: dict[str, Any] = {}
    if not isinstance(data.get("parameters") or {}, dict):
        raise EvoVLMError(f"{where}: 'parameters' must be a mapping")
    for key, value in (data.get("parameters") or {}).items():
        if key in ("normalize", "lambda"):
            options[key] = value
        elif key == "rescale":  # mergekit's DARE rescale restores the L1 norm
            options["rescale"] = "l1" if value else False
        elif key != "int8_mask":  # int8_mask only saves memory in mergekit
            raise EvoVLMError(f"{where}: mergekit parameter {key!r} is not supported")
    recipe = {key: data[key] for key in ("base_model", "target", "seed", "dtype") if data.get(key) is not None}
    return {"method": method, "models": models, "parameters": options, "origin": "mergekit", **recipe}


def to_mergekit(recipe: Recipe) -> str:
    """The recipe as a mergekit YAML config, when expressible (scalars only, no VLM target)."""
    for spec in recipe.models:
        if isinstance(spec.weight, dict) or isinstance(spec.density, dict):
            raise EvoVLMError(f"per-layer-group values ({spec.model}) are not expressible as a mergekit config")
    if recipe.target and recipe.target != recipe.base_model:
        raise EvoVLMError("a separate 'target' (e.g. merging into a VLM's language tower) "
                          "is not expressible as a mergekit config")
    models = []
    for spec in recipe.models:
        params: dict[str, float] = {"weight": spec.weight}
        if METHODS[recipe.method].uses_density:
            params["density"] = spec.density
        models.append({"model": spec.model, "parameters": params})
    data: dict[str, Any] = {"merge_method": recipe.method}
    if recipe.base_model:
        data["base_model"] = recipe.base_model
    data["models"] = models
    parameters = {key: recipe.options[key] for key in ("normalize", "lambda") if key in recipe.options}
    if recipe.options.get("rescale") is False:
        parameters["rescale"] = False
    if parameters:
        data["parameters"] = parameters
    if recipe.dtype:
        data["dtype"] = recipe.dtype
    header = "# Exported by evovlm.\n"
    if METHODS[recipe.method].random and recipe.origin != "mergekit":
        header += ("# Note: EvoVLM's DARE rescales kept entries by 1/density; mergekit rescales to the L1 norm,\n"
                   "# and draws its own random masks, so results differ slightly.\n")
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

