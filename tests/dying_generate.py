"""Imported by a fitness section (``imports``) in the sharded Ray test: with $EVOVLM_TEST_DIE = "N:FILE",
the first process to start its N-th generation batch writes FILE and kills itself, mid-shard, as a
crashed GPU worker would (once: FILE marks it done). Without the variable nothing changes."""

from evovlm.eval.runners import BaseRunner
from helpers import die_if_due

_generate_batch = BaseRunner._generate_batch
_batches = 0


def _dying_generate_batch(self, inputs, settings):
    global _batches
    die_if_due(_batches)
    _batches += 1
    return _generate_batch(self, inputs, settings)


BaseRunner._generate_batch = _dying_generate_batch
