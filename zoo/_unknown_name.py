"""The error for a name that a registry (models, quantizers, schemes) does not hold, with its close matches."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UnknownNameError"]


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class UnknownNameError(KeyError):
    """``name`` is not a registered ``kind`` (e.g. "model"): ``matches`` are the known names closest to it
    (:func:`difflib.get_close_matches`), ``known`` all of them. A KeyError, as a failed registry lookup is one."""

    def __init__(self, kind: str, name: object, known: Iterable[str], plural: str | None = None):
        self.kind, self.name, self.known = kind, name, sorted(known)
        self.plural = plural or f"{kind}s"
        self.matches = difflib.get_close_matches(str(name), self.known, n=3, cutoff=0.6)
        close = f" (did you mean {_either(self.matches)}?)" if self.matches else ""
        super().__init__(f"unknown {kind} {name!r}{close}; known {self.plural}: {', '.join(self.known)}")

    def __str__(self) -> str:  # the message, not KeyError's repr of it
        return str(self.args[0])

    def short(self) -> str:
        """One line for a command line: the close matches when there are some, else every known name."""
        if self.matches:
            return f"unknown {self.kind} {self.name!r}; did you mean {_either(self.matches)}?"
        return f"unknown {self.kind} {self.name!r}; known {self.plural}: {', '.join(self.known)}"
