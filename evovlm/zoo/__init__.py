"""The miniature zoo: tiny models trained here with real, distinct skills, and their benchmarks.

Built models live in ``evovlm/zoo/models/NAME`` and are addressed as ``zoo:NAME``
(``zoo:base``, ``zoo:ja``, ``zoo:math``, ``zoo:vlm``; evolved ones ``zoo:evollm``, ``zoo:evovlm``).
"""

MODELS = ("base", "ja", "math", "vlm")  # what `evovlm zoo build` writes, in build order
