"""The demo's header: what the visitor is looking at, and the headline scores from bundled results files."""

from __future__ import annotations

from evovlm.app.cases import read_results
from evovlm.app.config import AppConfig
from evovlm.app.generate import UserError

# The corpus score each metric's headline column shows (the substance first), then ROUGE-L-ja.
MAIN_SCORE = {"mgsm": "acc_ja", "rouge-ja": "content_ja"}


def _with_ci(summary: dict, key: str) -> str:
    value = summary.get(key)
    if not isinstance(value, (int, float)):
        return "–"
    low, high = summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{value:.1f} [{low:.1f}, {high:.1f}]"
    return f"{value:.1f}"


def headline_markdown(config: AppConfig) -> str:
    """A table of the showcase's headline results files ("" when there are none)."""
    rows = []
    for path in config.showcase.headline:
        try:
            results = read_results(path)
        except UserError:
            continue  # a models YAML may name results not built yet
        main = MAIN_SCORE.get(results.metric, "")
        rouge = _with_ci(results.summary, "rougeL_ja") if results.metric == "rouge-ja" else "–"
        n = results.summary.get("n", len(results.samples))
        rows.append(f"| {results.bench} (n = {n}) | {config.label(results.model)} | {main} "
                    f"{_with_ci(results.summary, main)} | {rouge} |")
    if not rows:
        return ""
    return "\n".join(["| benchmark | model | score [95% CI] | ROUGE-L-ja [95% CI] |", "|---|---|---|---|", *rows,
                      "", "Scores in %, on every question of the test split; the case-study tab shows each answer."])


def header_markdown(config: AppConfig) -> str:
    intro = config.showcase.intro.strip()
    table = headline_markdown(config)
    return "\n\n".join(part for part in (intro, table) if part)
