"""Known messages of the zoo's dependencies that say nothing about a run, filtered by their text (nothing else):

- Lightning's "💡 Tip: ..." advertisements (litlogger, litmodels), logged at INFO on every fit;
- torch's FutureWarning that ``isinstance(treespec, LeafSpec)`` is deprecated, which Lightning's own pytree code
  triggers on every fit;
- torch's "No CUDA runtime is found, using CUDA_HOME=..." warning, logged when the CPU kernels' build imports
  ``torch.utils.cpp_extension`` on a machine that has a CUDA toolkit but no GPU (the CPU kernels need neither).

Every other warning and log line stays as it is.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["LEAFSPEC_WARNING", "NOISE", "NoiseFilter", "silence_known_noise"]

# logger name -> the start of each message dropped from it
NOISE = {
    "pytorch_lightning.utilities.rank_zero": ("💡 Tip:",),
    "lightning_fabric.utilities.rank_zero": ("💡 Tip:",),
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class NoiseFilter(logging.Filter):
    """Drops the records of one logger whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_known_noise() -> None:
    """Install the filters (once: calling it again adds nothing)."""
    for name, prefixes in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoiseFilter) for f in logger.filters):
            logger.addFilter(NoiseFilter(prefixes))
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)  # replaces its own copy
