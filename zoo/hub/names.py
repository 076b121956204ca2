"""Model names as folder names: a name from a config.json or the command line becomes one folder under a target
folder (the folder hub, ``cards/``), and nothing outside that folder.

A model name is one path component of at most 128 ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a
letter or digit (so never ``.``, ``..``, empty, absolute, or holding a separator, a NUL or a look-alike of ``/``).
:func:`name_folder` checks the name, joins it, refuses a symbolic link there, and checks again that the resolved
folder is directly inside the resolved target.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["MODEL_NAME_PATTERN", "check_model_name", "name_folder"]

MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_model_name(name: object, what: str = "model name") -> str:
    """``name`` if it is a valid model name (see the module docstring), else a ValueError naming it."""
    if not isinstance(name, str) or MODEL_NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(
            f"{what} {name!r} is not a valid model name: one folder name of 1 to 128 ASCII letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def name_folder(target: Path | str, name: object, what: str = "model name") -> Path:
    """``target / name`` for a valid ``name``, not a symbolic link, checked to resolve directly inside ``target``;
    a ValueError otherwise."""
    folder = Path(target) / check_model_name(name, what)
    if folder.is_symlink():
        raise ValueError(f"{what} {name!r}: {folder} is a symbolic link (to {folder.readlink()}), not followed")
    root, resolved = Path(target).resolve(), folder.resolve()
    if resolved.parent != root:
        raise ValueError(f"{what} {name!r}: {folder} resolves to {resolved}, outside {root}")
    return folder
