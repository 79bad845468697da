"""EvoVLM: evolutionary model merging in parameter space and data-flow space.

Importing the package is cheap; heavy modules (torch, transformers) load on use.
"""

__version__ = "0.1.0"

# Registers the DFS model class (model_type "evovlm_dfs") with transformers' Auto classes,
# lazily: nothing heavy is imported here.
from evovlm import dfs as _dfs  # noqa: E402,F401
