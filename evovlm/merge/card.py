"""The README model card written beside every merged checkpoint."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

from evovlm import __version__
from evovlm.arch import is_vlm_config
from evovlm.io.resolve import hub_id
from evovlm.merge.methods import METHODS

if TYPE_CHECKING:
    from evovlm.merge.recipe import Recipe


def front_matter(sources: Iterable[str], pipeline_tag: str, tags: Iterable[str]) -> list[str]:
    """The card's YAML header. The Hub builds its model tree from ``base_model`` (repo ids only:
    local folders and ``zoo:`` models have no page there) with ``base_model_relation: merge``."""
    hub_ids = list(dict.fromkeys(i for i in map(hub_id, sources) if i))
    lines = ["---", "library_name: transformers", f"pipeline_tag: {pipeline_tag}",
             f"tags: [{', '.join(tags)}]"]
    if hub_ids:
        lines += ["base_model:", *(f"- {json.dumps(i)}" for i in hub_ids), "base_model_relation: merge"]
    return lines + ["---"]


def model_card(recipe: "Recipe", target: str, target_config: dict, base: str | None) -> str:
    """The card of a merge of ``recipe`` written into ``target`` (whose config.json is ``target_config``)."""
    method = METHODS[recipe.method]
    vlm = is_vlm_config(target_config)
    sources = [target] + ([base] if base else []) + [spec.model for spec in recipe.models]
    lines = [
        *front_matter(sources, "image-text-to-text" if vlm else "text-generation", ["merge", "evovlm"]),
        f"# Merged model ({recipe.method})",
        "",
        f"Created with EvoVLM {__version__} using **{recipe.method}**: {method.summary}.",
        "",
        "## Sources",
        f"- target (architecture, non-language tensors, tokenizer/processor): `{target}`",
    ]
    if base:
        lines.append(f"- base (task vectors are taken against it): `{base}`")
    for spec in recipe.models:
        lines.append(f"- `{spec.model}`: weight {spec.weight}"
                     + (f", density {spec.density}" if method.uses_density else ""))
    lines += ["", "## Parameters",
              f"- seed: {recipe.seed}"
              + (" (DARE masks are a pure function of seed, tensor and source)" if method.random else ""),
              f"- options: {recipe.options or 'defaults'}",
              f"- recipe format: {recipe.origin}",
              "", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
