"""The zoo as an EvoVLM plugin (entry point ``evovlm.plugins: zoo``): ``zoo:NAME`` models, the
``zoo-*`` benchmarks and the ``zoo-qa`` prompt template."""

from __future__ import annotations

from pathlib import Path

from evovlm.errors import EvoVLMError
from evovlm.zoo import MODELS_DIR, PREFIX, PROMPT


def resolve_zoo_model(name: str) -> Path:
    """The folder of ``zoo:NAME`` in the embedded zoo."""
    path = MODELS_DIR / name
    if not (path / "config.json").is_file():
        available = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file()) \
            if MODELS_DIR.is_dir() else []
        raise EvoVLMError(f"zoo model {name!r} not found under {MODELS_DIR}; available: "
                          f"{', '.join(available) or 'none'} (build the zoo with `evovlm zoo build`)")
    return path


def register() -> None:
    from evovlm.eval.benchmarks import register_image_ref
    from evovlm.eval.prompts import register_template
    from evovlm.io.resolve import register_prefix
    from evovlm.zoo import benchmarks, scenes

    register_prefix(PREFIX, resolve_zoo_model)
    register_template("zoo-qa", PROMPT)
    benchmarks.register()
    register_image_ref("zoo-scene:", lambda ref: scenes.render(scenes.scene_from_ref(ref), size=192))
