"""Data-flow-space (DFS) merged models: ``EvoDFSForCausalLM`` and its config.

A DFS model runs a *path* through decoder layers taken from two models A and B (a layer
may appear several times), scaling the hidden state on each hop. It is a real
transformers model class (``model_type: evovlm_dfs``): :func:`register` adds it to
``AutoConfig`` and ``AutoModelForCausalLM``, so a saved DFS checkpoint loads with
``from_pretrained`` and no ``trust_remote_code``. EvoVLM's own loaders register before they
load; elsewhere ``import evovlm.dfs.auto`` does. Registering imports transformers' modeling
code (seconds), so ``import evovlm`` alone does not.
"""

from __future__ import annotations

MODEL_TYPE = "evovlm_dfs"


def register() -> None:
    """Make ``evovlm_dfs`` checkpoints loadable by transformers' Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from evovlm.dfs.configuration import EvoDFSConfig
    from evovlm.dfs.modeling import EvoDFSForCausalLM

    AutoConfig.register(MODEL_TYPE, EvoDFSConfig, exist_ok=True)
    AutoModelForCausalLM.register(EvoDFSConfig, EvoDFSForCausalLM, exist_ok=True)
