"""The miniature zoo: tiny models trained here with real, distinct skills, and their benchmarks.

Built models live in ``evovlm/zoo/models/NAME`` and are addressed as ``zoo:NAME``
(``zoo:base``, ``zoo:ja``, ``zoo:math``, ``zoo:reader``, ``zoo:vlm``; evolved ones ``zoo:evollm``, ``zoo:evodfs``,
``zoo:evohybrid``, ``zoo:evovlm``).
The zoo is an EvoVLM plugin (:mod:`evovlm.zoo.plugin`): the core knows none of this.
"""

from pathlib import Path

MODELS = ("base", "ja", "math", "reader", "vlm")  # what `evovlm zoo build` writes, in build order
PREFIX = "zoo:"
MODELS_DIR = Path(__file__).resolve().parent / "models"  # where zoo:NAME resolves
# The zoo's prompt: short, because the models read characters (every character costs a token).
PROMPT = "Q: {input}\nA:"
