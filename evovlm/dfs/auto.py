"""``import evovlm.dfs.auto`` registers the DFS model class with transformers' Auto classes."""

from evovlm.dfs import register

register()
