"""zoo.training.quiet: the known noise is dropped by its text, every other message stays."""

import logging
import warnings

import pytest

from zoo.training.quiet import NOISE, silence_known_noise

TIP = ("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
       "(https://pypi.org/project/litlogger/) to enable LitLogger.")
LEAFSPEC = ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
            "treespec.is_leaf()` instead.")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(
    ("logger", "noise", "kept"),
    [
        ("pytorch_lightning.utilities.rank_zero", TIP, "`Trainer.fit` stopped: `max_steps=3` reached."),
        ("lightning_fabric.utilities.rank_zero", TIP, "Seed set to 0"),
        ("torch.utils.cpp_extension", "No CUDA runtime is found, using CUDA_HOME='%s'", "Emitting ninja build file"),
    ],
)
def test_log_noise_is_dropped_and_the_rest_kept(logger, noise, kept):
    silence_known_noise()
    silence_known_noise()  # twice: still one filter
    log = logging.getLogger(logger)
    assert len(log.filters) == 1 and logger in NOISE
    collect = _Collect()
    log.addHandler(collect)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        log.warning(noise, "/usr/local") if "%s" in noise else log.info(noise)
        log.info(kept)
        log.warning("💡 a message that only contains the word Tip: later")
    finally:
        log.removeHandler(collect)
        log.setLevel(level)
    assert collect.messages == [kept, "💡 a message that only contains the word Tip: later"]


def test_the_leafspec_deprecation_is_ignored_and_other_warnings_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn(LEAFSPEC, FutureWarning, stacklevel=1)
        warnings.warn("`isinstance(x, Other)` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn(LEAFSPEC, UserWarning, stacklevel=1)  # same text, another category: not the known one
    assert [(str(w.message), w.category) for w in caught] == [
        ("`isinstance(x, Other)` is deprecated", FutureWarning), (LEAFSPEC, UserWarning)]
