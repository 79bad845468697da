"""The README model card written beside every merged checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evovlm import __version__
from evovlm.merge.methods import METHODS

if TYPE_CHECKING:
    from evovlm.merge.engine import MergeJob
    from evovlm.merge.recipe import Recipe


def model_card(recipe: "Recipe", job: "MergeJob") -> str:
    method = METHODS[recipe.method]
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, evovlm]",
        "---",
        f"# Merged model ({recipe.method})",
        "",
        f"Created with EvoVLM {__version__} using **{recipe.method}**: {method.summary}.",
        "",
        "## Sources",
        f"- target (architecture, non-language tensors, tokenizer/processor): `{job.target.ref}`",
    ]
    if job.base:
        lines.append(f"- base (task vectors are taken against it): `{job.base.ref}`")
    for spec in recipe.models:
        lines.append(f"- `{spec.model}`: weight {spec.weight}" + (f", density {spec.density}" if method.uses_density else ""))
    lines += ["", "## Parameters",
              f"- seed: {recipe.seed}" + (" (DARE masks are a pure function of seed, tensor and source)" if method.random else ""),
              f"- options: {recipe.options or 'defaults'}",
              f"- recipe format: {recipe.origin}",
              "", "## Recipe", "", "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
