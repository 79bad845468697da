"""Data-flow-space (DFS) merged models: ``EvoDFSForCausalLM`` and its config.

A DFS model runs a *path* through decoder layers taken from two models A and B (a layer
may appear several times), scaling the hidden state on each hop. It is a real
transformers model class (``model_type: evovlm_dfs``) registered with ``AutoConfig`` and
``AutoModelForCausalLM``, so a saved DFS checkpoint loads with ``from_pretrained`` and no
``trust_remote_code``.

Registration is lazy so ``import evovlm`` stays cheap (importing transformers' modeling
code costs seconds): :func:`install_auto_registration` registers at once when the
transformers Auto modules are already imported, and otherwise right after Python
imports them.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

MODEL_TYPE = "evovlm_dfs"
_CONFIG_MODULE = "transformers.models.auto.configuration_auto"
_MODEL_MODULE = "transformers.models.auto.modeling_auto"


def register_config() -> None:
    # Import from the defining modules: the callbacks run while transformers' lazy
    # package modules may still be initialising.
    from transformers.models.auto.configuration_auto import AutoConfig

    from evovlm.dfs.configuration import EvoDFSConfig

    AutoConfig.register(MODEL_TYPE, EvoDFSConfig, exist_ok=True)


def register_model() -> None:
    from transformers.models.auto.modeling_auto import AutoModelForCausalLM

    from evovlm.dfs.configuration import EvoDFSConfig
    from evovlm.dfs.modeling import EvoDFSForCausalLM

    register_config()
    AutoModelForCausalLM.register(EvoDFSConfig, EvoDFSForCausalLM, exist_ok=True)


_CALLBACKS: dict[str, Callable[[], None]] = {_CONFIG_MODULE: register_config, _MODEL_MODULE: register_model}


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception as exc:  # never break `import transformers` over our registration
        warnings.warn(f"evovlm: could not register the {MODEL_TYPE} model with transformers: {exc}", stacklevel=2)


class _RunAfterExec:  # a loader (duck-typed: importlib.abc costs 10 ms to import)
    """Wraps a module's loader: executes the module, then runs ``callback``."""

    def __init__(self, loader: Any, callback: Callable[[], None]) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        _run(self._callback)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ... for tracebacks and tools
        return getattr(self._loader, name)


class _AutoRegistrationFinder:  # a meta path finder
    """Finds nothing itself: wraps the real spec of the two transformers Auto modules."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        callback = _CALLBACKS.pop(fullname, None)
        if callback is None:
            return None
        if not _CALLBACKS and self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RunAfterExec(spec.loader, callback)
                return spec
        return None


def install_auto_registration() -> None:
    """Register the DFS classes with transformers now or as soon as transformers loads its Auto classes."""
    for name in list(_CALLBACKS):
        if name in sys.modules:
            _run(_CALLBACKS.pop(name))
    if _CALLBACKS and not any(isinstance(f, _AutoRegistrationFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoRegistrationFinder())


install_auto_registration()
