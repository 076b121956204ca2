"""Cases for the fuzz worker's own tests: what a case can do to the child process."""

from __future__ import annotations

import os
import signal
import time


def echo(value: object) -> object:
    return value


def fail(message: str) -> None:
    raise KeyError(message)


def crash() -> None:
    """Die as a segfaulting kernel would."""
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(seconds: float) -> None:
    time.sleep(seconds)


def shout(text: str) -> str:
    """Write to stdout, as a compiler or a C++ kernel might, and to the file descriptor under it."""
    print(text)
    os.write(1, text.encode() + b"\n")
    return text
