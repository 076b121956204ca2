"""The fuzz worker: a case's value or exception comes back, and a crash or a hang is a WorkerCrashed after which
the next call runs in a fresh child."""

import pytest
from fuzz_worker import CaseError, Worker, WorkerCrashed


@pytest.fixture
def child():
    worker = Worker(timeout_s=2.0, preload=())
    yield worker
    worker.close()


def test_values_and_exceptions_come_back(child):
    value = {"a": [1, 2.5, None, True, "x"], "huge": 2**80, "nan": float("nan")}
    echoed = child.call("worker_cases", "echo", value=value)
    assert echoed["a"] == value["a"] and echoed["huge"] == 2**80 and echoed["nan"] != echoed["nan"]
    with pytest.raises(CaseError) as info:
        child.call("worker_cases", "fail", message="no such key")
    assert (info.value.module, info.value.error, info.value.message) == ("builtins", "KeyError", "'no such key'")
    assert "worker_cases.py" in info.value.trace


def test_printing_does_not_break_the_protocol(child):
    assert child.call("worker_cases", "shout", text='{"value": 1}') == '{"value": 1}'
    assert child.call("worker_cases", "echo", value=3) == 3


def test_a_crash_is_reported_and_the_next_call_starts_afresh(child):
    first = child.call("worker_cases", "echo", value=1)
    with pytest.raises(WorkerCrashed, match=r"the worker died \(signal SIGSEGV\) while worker_cases\.crash"):
        child.call("worker_cases", "crash")
    assert child.call("worker_cases", "echo", value=2) == first + 1


def test_a_hang_is_killed_after_the_timeout(child):
    with pytest.raises(WorkerCrashed, match=r"no answer within 2 s \(killed\) while worker_cases\.hang"):
        child.call("worker_cases", "hang", seconds=60)
    assert child.call("worker_cases", "echo", value="alive") == "alive"
