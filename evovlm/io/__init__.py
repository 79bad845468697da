"""Checkpoint I/O: resolving model references, lazy tensor reading, atomic sharded writing."""
