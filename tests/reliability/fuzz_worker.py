"""A child process that runs fuzz cases, so that a crash or a hang of the code under test is a failing example
instead of a dead or stuck test runner.

The parent sends one JSON line per case, ``{"module": name, "function": name, "kwargs": {...}}``, naming a function
of a module in this folder (``ops_cases``, ``loader_cases``); the child runs it and answers one JSON line:
``{"value": <what it returned>}``, or, when it raised, ``{"error": <exception type>, "module": <its module>,
"message": str(e), "traceback": ...}``. :class:`Worker` starts the child on its first call, and raises
:class:`WorkerCrashed` when the child dies during a case (a segfault, an abort, the kernel's OOM killer) or answers
nothing within the call's timeout (it is then killed); the next call starts a fresh child.

Messages travel over the child's original stdout; the child points its fd 1 at stderr first, so that whatever the
code under test prints (a compiler, a C++ kernel) cannot break the protocol. No pickle: only JSON crosses.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 600.0  # importing torch and the zoo, and building the compiled kernels if no cache has them


class WorkerCrashed(AssertionError):
    """The child died or hung while running a case."""


class CaseError(Exception):
    """An exception the case raised in the child: its type name, module and message."""

    def __init__(self, error: str, module: str, message: str, trace: str):
        super().__init__(f"{module}.{error}: {message}")
        self.error, self.module, self.message, self.trace = error, module, message, trace


class Worker:
    """The parent's handle on one child process (see the module docstring)."""

    def __init__(self, timeout_s: float = 120.0, preload: tuple[str, ...] = ("zoo_kernels.cpu:load_extension",)):
        """``preload``: ``"module:function"`` calls the child makes before it answers ready (building the compiled
        kernels there, not inside a case's timeout)."""
        self.timeout_s, self.preload = timeout_s, preload
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._buffer = b""

    def call(self, module: str, function: str, **kwargs: Any) -> Any:
        """``module.function(**kwargs)`` in the child: its return value, or :class:`CaseError` if it raised."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        request = json.dumps({"module": module, "function": function, "kwargs": kwargs})
        try:
            self._proc.stdin.write(request.encode() + b"\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone: the read below reports how it ended
        reply = self._read_line(self.timeout_s, f"{module}.{function}({request})")
        if "error" in reply:
            raise CaseError(reply["error"], reply["module"], reply["message"], reply["traceback"])
        return reply["value"]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _start(self) -> None:
        self.close()
        self._stderr = tempfile.TemporaryFile()
        self._buffer = b""
        self._proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *self.preload],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=HERE)
        self._read_line(START_TIMEOUT_S, "starting the worker")

    def _read_line(self, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self._proc.kill()
                self._proc.wait()
                raise WorkerCrashed(f"no answer within {timeout_s:.0f} s (killed) while {what}{self._stderr_tail()}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self._proc.wait()
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                raise WorkerCrashed(f"the worker died ({how}) while {what}{self._stderr_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _stderr_tail(self, limit: int = 3000) -> str:
        self._stderr.seek(max(self._stderr.seek(0, os.SEEK_END) - limit, 0))
        text = self._stderr.read().decode(errors="replace")
        return f"; its stderr ends with:\n{text}" if text.strip() else ""


def serve(preload: list[str]) -> None:
    """The child's loop: make the ``preload`` calls, then read a request line, run it, answer; until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.path.insert(0, str(HERE))
    for call in preload:
        module, function = call.split(":")
        getattr(importlib.import_module(module), function)()
    protocol.write('{"ready": true}\n')
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            value = getattr(importlib.import_module(request["module"]), request["function"])(**request["kwargs"])
            reply = json.dumps({"value": value})
        except Exception as e:  # noqa: BLE001 - every exception is the case's result, judged by the parent
            reply = json.dumps({"error": type(e).__name__, "module": type(e).__module__, "message": str(e),
                                "traceback": traceback.format_exc()})
        protocol.write(reply + "\n")
        protocol.flush()


if __name__ == "__main__":
    serve(sys.argv[1:])
