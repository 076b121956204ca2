"""Saving over an existing checkpoint is all or nothing: a fault at any step, even SIGKILL, leaves the old one."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import zoo
from zoo.hub import atomic, checkpoint
from zoo.hub.publish import collect_cards, write_cards

FILES = ["README.md", "config.json", "model.safetensors"]


def _model(name):
    torch.manual_seed(1)
    return zoo.create_model(name, num_classes=10, in_chans=1, small_input=True).eval()


@pytest.fixture(scope="module")
def models():
    return {"old": _model("xnor_resnet18"), "new": _model("bwn_resnet18")}


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_loads_as(folder, model):
    loaded = zoo.from_pretrained(folder)
    reference = zoo.pack(model).state_dict()
    state = loaded.net.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert loaded.config["architecture"] == model.pretrained_cfg["architecture"]


@pytest.fixture
def old(models, tmp_path):
    folder = tmp_path / "hub" / "digits-model"
    zoo.pack_model(models["old"]).save_pretrained(folder)
    return folder


def _fail_writing(name, monkeypatch):
    real = checkpoint.write_file

    def write_half_then_fail(path, data):
        if path.name == name:
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(checkpoint, "write_file", write_half_then_fail)


def _fail_serialising(monkeypatch):
    def full(*args, **kwargs):
        raise MemoryError("serialising the weights")

    monkeypatch.setattr(checkpoint, "save", full)


def _fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", fsync)


def _fail_exchange(monkeypatch):
    def exchange(a, b):
        raise OSError(errno.EIO, "Input/output error", str(a))

    monkeypatch.setattr(atomic, "_exchange", exchange)


def _fail_second_rename(monkeypatch):
    """No RENAME_EXCHANGE: the old folder is renamed aside, then putting the new one in place fails."""
    real = os.rename

    def rename(src, dst):
        if ".saving-" in str(src):
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst)

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    monkeypatch.setattr(atomic.os, "rename", rename)


FAULTS = {
    "weights write": lambda mp: _fail_writing("model.safetensors", mp),
    "config write": lambda mp: _fail_writing("config.json", mp),
    "card write": lambda mp: _fail_writing("README.md", mp),
    "serialising": _fail_serialising,
    "fsync": _fail_fsync,
    "exchange": _fail_exchange,
    "rename without exchange": _fail_second_rename,
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_at_any_step_leaves_the_old_checkpoint(fault, old, models, monkeypatch):
    before = _snapshot(old)
    with monkeypatch.context() as mp:
        FAULTS[fault](mp)
        with pytest.raises((OSError, MemoryError)):
            zoo.pack_model(models["new"]).save_pretrained(old)
    assert _snapshot(old) == before
    assert sorted(p.name for p in old.parent.iterdir()) == ["digits-model"]  # no temporary folder left
    _assert_loads_as(old, models["old"])


def test_saving_over_an_old_checkpoint_loads_as_the_new_one(old, models):
    (old / "notes.txt").write_text("kept")
    zoo.pack_model(models["new"]).save_pretrained(old)
    assert sorted(p.name for p in old.parent.iterdir()) == ["digits-model"]
    assert sorted(p.name for p in old.iterdir()) == sorted(FILES + ["notes.txt"])
    assert (old / "notes.txt").read_text() == "kept"
    _assert_loads_as(old, models["new"])


def test_saving_into_a_new_folder_leaves_no_temporary_files(models, tmp_path):
    zoo.pack_model(models["new"]).save_pretrained(tmp_path / "a" / "b")
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["a", "b", *FILES])
    _assert_loads_as(tmp_path / "a" / "b", models["new"])


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import torch
    import zoo
    from zoo.hub import checkpoint

    folder, name, started = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    real = checkpoint.write_file

    def slow(path, data):
        if path.name == name:
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                started.write_text(str(path))
                time.sleep(300)
        real(path, data)

    checkpoint.write_file = slow
    torch.manual_seed(1)
    model = zoo.create_model("bwn_resnet18", num_classes=10, in_chans=1, small_input=True).eval()
    zoo.pack_model(model).save_pretrained(folder)
    """
)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_sigkill_while_writing_leaves_the_old_checkpoint(name, old, models, tmp_path):
    before = _snapshot(old)
    started = tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(old), name, str(started)])
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert child.poll() is None, f"the saving process exited ({child.returncode}) before writing"
            assert time.monotonic() < deadline, "the saving process did not start writing within 120 s"
            time.sleep(0.05)
        half_written = started.read_text()
        assert ".saving-" in half_written and half_written.endswith(name)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert _snapshot(old) == before
    _assert_loads_as(old, models["old"])
    leftover = [p.name for p in old.parent.iterdir() if p.name != "digits-model"]
    assert len(leftover) == 1 and leftover[0].startswith(".digits-model.saving-")
    assert [c["architecture"] for c in collect_cards(old.parent)] == ["xnor_resnet18"]


def test_write_cards_fault_leaves_the_old_cards(tmp_path, monkeypatch):
    out = tmp_path / "cards"
    base = {"format_version": 1, "architecture": "xnor_resnet18", "num_classes": 10, "in_chans": 1,
            "scheme": zoo.get_scheme("xnor").to_dict()}
    write_cards([{**base, "name": "a-digits"}, {**base, "name": "b-digits"}], out)
    (out / "bench.json").write_text("{}")
    before = _snapshot(out)
    real = atomic.write_file

    def fail_on_index(path, data):
        if path.name == "index.html":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr("zoo.hub.publish.write_file", fail_on_index)
    with pytest.raises(OSError, match="No space left"):
        write_cards([{**base, "name": "a-digits", "num_classes": 7}], out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cards"]
    monkeypatch.undo()
    write_cards([{**base, "name": "a-digits", "num_classes": 7}], out)
    assert '"num_classes": 7' in (out / "a-digits" / "config.json").read_text()
    assert (out / "b-digits" / "config.json").read_bytes() == before["b-digits/config.json"]
    assert (out / "bench.json").read_text() == "{}"
