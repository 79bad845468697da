"""Blind comparisons, as in Chatbot Arena: the pair's columns in a random order, names shown after a vote.

The visitor still picks the two models; which one answers in column A is drawn at random per round
(per conversation in chat), so a vote judges the answers, not the names. Votes are tallied for the
browser session only (Gradio state); nothing is stored on the server.
"""

from __future__ import annotations

import random
from typing import Any

VOTES = {"A": "A is better", "B": "B is better", "tie": "tie"}
HIDDEN = "? (blind: names shown after your vote)"


def new_round(model_a: str, model_b: str, previous: dict | None = None, *, keep: bool = False,
              rng: random.Random | None = None) -> dict:
    """A round's state: the columns' models in a random order (``keep``: the previous round's order, as in a
    conversation that goes on with the same pair)."""
    if keep and previous and sorted(previous.get("order", ())) == sorted((model_a, model_b)):
        return {**previous, "voted": False}
    order = [model_a, model_b]
    (rng or random).shuffle(order)
    return {"order": order, "voted": False}


def vote(choice: str, round_state: dict | None, tally: dict | None) -> tuple[dict | None, dict, str]:
    """(round state, tally, message) after a vote; a vote without a blind round, or a second one, counts nothing."""
    tally = dict(tally or {})
    if not round_state or not round_state.get("order"):
        return round_state, tally, "Ask in blind mode first; then vote."
    if round_state.get("voted"):
        return round_state, tally, "Already counted; ask again for a new round."
    model_a, model_b = round_state["order"]
    winner = {"A": model_a, "B": model_b}.get(choice)
    key = winner if winner else "ties"
    tally[key] = tally.get(key, 0) + 1
    said = f"you preferred {winner}" if winner else "a tie"
    return {**round_state, "voted": True}, tally, f"A was **{model_a}**, B was **{model_b}**: {said}."


def tally_markdown(tally: dict | None) -> str:
    if not tally:
        return ""
    wins = sorted(((count, name) for name, count in tally.items() if name != "ties"), reverse=True)
    parts = [f"{name} {count}" for count, name in wins] + [f"ties {tally.get('ties', 0)}"]
    return f"Your votes this session: {', '.join(parts)}."


def labels(config: Any, round_state: dict | None, *, revealed: bool) -> tuple[str, str]:
    """The two columns' labels for a blind round."""
    if not round_state or not revealed:
        return f"A: {HIDDEN}", f"B: {HIDDEN}"
    model_a, model_b = round_state["order"]
    return f"A: {config.label(model_a)}", f"B: {config.label(model_b)}"
