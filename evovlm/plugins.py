"""Plugins: packages that add model references, benchmarks and prompt templates to EvoVLM.

A plugin is a callable registered under the ``evovlm.plugins`` entry-point group of its
package's metadata; it fills the registries (:func:`evovlm.io.resolve.register_prefix`,
:func:`evovlm.eval.benchmarks.register_benchmark`, :func:`evovlm.eval.prompts.register_template`).
The miniature zoo is one (``zoo:NAME`` models, ``zoo-*`` benchmarks, the ``zoo-qa`` template);
the core never imports it by name. Plugins load once, the first time a registry misses a name.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from evovlm.errors import EvoVLMError

GROUP = "evovlm.plugins"
_lock = threading.Lock()
_loaded = False


def load_plugins() -> None:
    """Call every installed plugin's registration, once per process."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True  # set first: a plugin may use the registries it fills
        for entry in entry_points(group=GROUP):
            try:
                entry.load()()
            except Exception as exc:  # a broken plugin is named, not a traceback
                raise EvoVLMError(f"the EvoVLM plugin {entry.name!r} ({entry.value}) failed to load: {exc}") from exc
