"""Weights & Biases logging that never needs an account: offline unless the user has configured wandb."""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger

__all__ = ["ZooWandbLogger", "wandb_configured"]


def wandb_configured() -> bool:
    """True when wandb can sync: an API key in the environment or in ``~/.netrc``, and no offline mode forced."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class ZooWandbLogger(WandbLogger):
    """``WandbLogger`` whose ``offline`` defaults to "not configured": runs are kept locally under ``save_dir``
    (``wandb sync`` uploads them later) unless an API key is set up."""

    def __init__(self, *args, offline: bool | None = None, **kwargs):
        # wandb looks for a git repository from its run folder and warns that the "git root" does not exist when the
        # folder is not there yet (the first run of a recipe): create it first.
        run_folder = kwargs.get("save_dir") or kwargs.get("dir")  # what WandbLogger gives wandb.init as its dir
        if run_folder:
            Path(run_folder).mkdir(parents=True, exist_ok=True)
        super().__init__(*args, offline=not wandb_configured() if offline is None else offline, **kwargs)
        # Lightning always passes wandb.init an `anonymous` setting (None when not asked for), which recent wandb
        # versions deprecate with a warning on every run; leave it out unless it was asked for.
        init = getattr(self, "_wandb_init", None)  # Lightning's private dict: left alone if it ever changes
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)
