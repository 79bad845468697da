"""EvoVLM: evolutionary model merging in parameter space and data-flow space.

Importing the package is cheap; heavy modules (torch, transformers) load on use.
"""

__version__ = "0.1.0"
