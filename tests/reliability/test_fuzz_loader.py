"""Property-based tests of the checkpoint loader (``zoo.from_pretrained``) over mutated files, each load run in the
fuzz worker so that a crash or a hang is a failing example.

Real checkpoints of small models (``xnor_alexnet``; ``xnor_googlenet``, whose 16-channel layers have padding bits)
are saved once; each example writes a mutated copy: bits flipped, bytes set, inserted, deleted or cut anywhere in
``model.safetensors``; dtypes, shapes, offsets, entries and ``__metadata__`` of its header edited; tensor values
changed; ``config.json`` replaced by random JSON, edited field by field, or mutated byte by byte. The oracle
(``safetensors_format`` for the weights, :func:`config_expectation` for the config) says what the files hold, and
the outcome must match it exactly: a file that is valid with values the zoo accepts loads exactly those tensors and
that config; anything else is one ``zoo.CheckpointError`` (naming the bad tensor, for bad values), never another
exception, a crash, a hang, or a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzz_worker import CaseError
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from safetensors_format import ITEMSIZE, FormatError, Tensor, parse, value_problems

import zoo
from zoo.packing import PackedBinaryConv2d, PackedBinaryLinear

TORCH_DTYPES = {"F32": "float32", "I32": "int32", "I64": "int64"}
STRUCTURAL = ("format_version", "architecture", "scheme", "num_classes", "in_chans")
MAX_CONFIG_BYTES, MAX_DEPTH = 1 << 20, 16


class Checkpoint:
    """A saved checkpoint: its folder, file bytes, config, ``__metadata__``, tensors (as the oracle reads them), and
    the input channels of each ``weight_bits`` tensor."""

    def __init__(self, folder: Path, channels: dict[str, int]):
        self.folder, self.channels = folder, channels
        self.weights = (folder / "model.safetensors").read_bytes()
        self.metadata, self.tensors = parse(self.weights)
        self.config_text = (folder / "config.json").read_bytes()
        self.config = json.loads(self.config_text)

    def __repr__(self) -> str:  # in hypothesis' reports: the bytes would fill pages
        return f"Checkpoint({self.folder.name})"

    @property
    def names(self) -> list[str]:
        return sorted(self.tensors)

    @property
    def data_start(self) -> int:
        return 8 + struct.unpack("<Q", self.weights[:8])[0]


def _save(name: str, root: Path) -> Checkpoint:
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10, in_chans=1, small_input=True).eval()
    with torch.no_grad():  # BatchNorm statistics other than 0 and 1
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    packed = zoo.pack_model(model, training={"dataset": "digits", "top1": 0.5})
    folder = root / name
    packed.save_pretrained(folder)
    channels = {f"{prefix}.weight_bits": m.in_channels // m.groups if isinstance(m, PackedBinaryConv2d)
                else m.in_features
                for prefix, m in packed.net.named_modules() if isinstance(m, PackedBinaryConv2d | PackedBinaryLinear)}
    return Checkpoint(folder, channels)


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory) -> Checkpoint:
    return _save("xnor_alexnet", tmp_path_factory.mktemp("fuzz-alexnet"))


@pytest.fixture(scope="module")
def googlenet(tmp_path_factory) -> Checkpoint:
    return _save("xnor_googlenet", tmp_path_factory.mktemp("fuzz-googlenet"))


# ------------------------------------------------------------------------------------------------- the oracle


def weights_expectation(raw: bytes, ckpt: Checkpoint) -> tuple[str, Any]:
    """``("load", tensors)`` if ``raw`` is a safetensors file of ``ckpt``'s tensor names, dtypes and shapes, with
    the zoo's ``__metadata__`` and values the zoo accepts; else ``("error", why)`` (the bad tensors' names, for
    values)."""
    try:
        metadata, tensors = parse(raw)
    except FormatError as e:
        return "error", f"not safetensors: {e}"
    structure = {k: (t.dtype, t.shape) for k, t in tensors.items()}
    if structure != {k: (t.dtype, t.shape) for k, t in ckpt.tensors.items()}:
        return "error", "tensor names, dtypes or shapes differ"
    meta = metadata or {}
    if (meta.get("zoo_format_version") != "1" or meta.get("packing") != ckpt.metadata["packing"]
            or meta.get("format", "pt") != "pt"
            or any(key in meta and meta[key] != ckpt.metadata[key] for key in ("architecture", "scheme"))):
        return "error", f"__metadata__ {meta!r}"
    bad = value_problems(tensors, ckpt.channels)
    return ("error", bad) if bad else ("load", tensors)


def _json_depth(value: Any) -> int:
    """Containers nested in ``value``: 0 for a scalar, 1 for ``[]`` or ``{"a": 1}``."""
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((_json_depth(c) for c in children), default=0)
    return 0


def _strict_json(text: bytes) -> Any:
    """The JSON value of ``text``, or ValueError for what a strict reader refuses: not UTF-8, not JSON, a repeated
    key, NaN / Infinity, a number too large for a float."""

    def finite(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            raise ValueError(f"{token} overflows a float")
        return value

    def constant(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    def no_repeats(pairs):
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("a key appears twice")
        return dict(pairs)

    return json.loads(text.decode("utf-8"), parse_float=finite, parse_constant=constant, object_pairs_hook=no_repeats)


def config_expectation(text: bytes, ckpt: Checkpoint) -> tuple[str, Any]:
    """``("error", why)`` where ``config.json`` holding ``text`` must be refused: over 1 MiB, not strict JSON (see
    :func:`_strict_json`), not an object, nested over 16 deep, or a field that builds the network (format version,
    architecture, scheme fields, classes, channels, stem) other than ``ckpt``'s, or missing (except scheme fields);
    else ``("either", config)``: the zoo may refuse other fields' types and ranges, and must otherwise load
    ``config``."""
    if len(text) > MAX_CONFIG_BYTES:
        return "error", "over 1 MiB"
    try:
        config = _strict_json(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return "error", f"not strict JSON: {e}"
    if not isinstance(config, dict) or _json_depth(config) > MAX_DEPTH:
        return "error", "not an object, or nested too deeply"
    for key in STRUCTURAL:
        if key not in config or (config[key] != ckpt.config[key] and key != "scheme"):
            return "error", f"{key} missing or changed"
    scheme, saved = config["scheme"], ckpt.config["scheme"]
    if not isinstance(scheme, dict) or any(k not in saved or scheme[k] != saved[k] for k in scheme):
        return "error", "scheme changed"  # a field left out takes its default: an older checkpoint still loads
    if bool(config.get("small_input", False)) != ckpt.config["small_input"]:
        return "error", "small_input changed"
    return "either", config


def load_outcome(worker, ckpt: Checkpoint, weights: bytes | None = None, config: bytes | None = None):
    """What ``zoo.from_pretrained`` gives for ``ckpt``'s folder with these files: the worker's report, or the
    CaseError it raised."""
    with tempfile.TemporaryDirectory(dir=ckpt.folder.parent) as folder:
        Path(folder, "model.safetensors").write_bytes(ckpt.weights if weights is None else weights)
        Path(folder, "config.json").write_bytes(ckpt.config_text if config is None else config)
        try:
            return worker.call("loader_cases", "load", folder=folder)
        except CaseError as e:
            return e


def assert_refused(outcome, why: Any) -> None:
    assert isinstance(outcome, CaseError), f"loaded a checkpoint that must be refused ({why})"
    assert (outcome.module, outcome.error) == ("zoo.hub.config", "CheckpointError"), (
        f"{outcome.module}.{outcome.error} instead of CheckpointError ({why}): {outcome.message}\n{outcome.trace}")


def assert_loaded(outcome, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
    assert not isinstance(outcome, CaseError), f"refused a valid checkpoint: {outcome}"
    assert outcome["type"] == "BinaryModel" and outcome["training"] is False
    expected = {k: [TORCH_DTYPES[t.dtype], list(t.shape), hashlib.sha256(t.data).hexdigest()]
                for k, t in tensors.items()}
    differ = sorted(k for k in expected.keys() | outcome["tensors"].keys()
                    if expected.get(k) != outcome["tensors"].get(k))
    assert not differ, f"loaded tensors differ from the file's: {differ[:5]}"
    assert outcome["config"] == config, "the loaded config differs from config.json"


def _count(outcome) -> None:
    event("refused" if isinstance(outcome, CaseError) else "loaded")  # in --hypothesis-show-statistics


def judge_weights(outcome, raw: bytes, ckpt: Checkpoint) -> None:
    _count(outcome)
    kind, detail = weights_expectation(raw, ckpt)
    if kind == "load":
        assert_loaded(outcome, detail, ckpt.config)
        return
    assert_refused(outcome, detail)
    if isinstance(detail, list):  # bad values: the error names one of the tensors
        assert any(repr(name) in outcome.message for name in detail), f"names none of {detail}: {outcome.message}"


def judge_config(outcome, text: bytes, ckpt: Checkpoint) -> None:
    _count(outcome)
    kind, detail = config_expectation(text, ckpt)
    if kind == "error" or isinstance(outcome, CaseError):
        assert_refused(outcome, detail)
    else:
        assert_loaded(outcome, ckpt.tensors, detail)


def test_the_saved_checkpoints_load_as_the_oracle_reads_them(worker, alexnet, googlenet):
    for ckpt in (alexnet, googlenet):
        assert weights_expectation(ckpt.weights, ckpt)[0] == "load"
        assert config_expectation(ckpt.config_text, ckpt) == ("either", ckpt.config)
        assert_loaded(load_outcome(worker, ckpt), ckpt.tensors, ckpt.config)
    assert any(c % 32 for c in googlenet.channels.values())  # padding bits to check


# ------------------------------------------------------------------------------------------- tensor values

# (tensor pick, element pick, what, bit, float32 value, integer value); picks are taken modulo what there is
VALUE_EDITS = st.lists(
    st.tuples(st.integers(0, 2**20), st.integers(0, 2**40), st.sampled_from(["flip", "set", "padding"]),
              st.integers(0, 63), st.floats(width=32), st.integers(-(2**63), 2**63 - 1)),
    min_size=1, max_size=3,
)


def _edit_values(ckpt: Checkpoint, edits) -> bytes:
    raw = bytearray(ckpt.weights)
    header = json.loads(raw[8 : ckpt.data_start])
    padded = [n for n in ckpt.names if n in ckpt.channels and ckpt.channels[n] % 32]
    for tensor_pick, element_pick, what, bit, f32, integer in edits:
        names = padded if what == "padding" else ckpt.names
        name = names[tensor_pick % len(names)]
        t = ckpt.tensors[name]
        size = ITEMSIZE[t.dtype]
        count = math.prod(t.shape)
        if what == "padding":  # a bit past the channel count in a last word
            words = t.shape[-1]
            element = (element_pick % (count // words)) * words + words - 1
            used = ckpt.channels[name] % 32
            bit = used + bit % (32 - used)
        else:
            element = element_pick % count
        at = ckpt.data_start + header[name]["data_offsets"][0] + element * size
        if what == "set":
            value = (struct.pack("<f", f32) if t.dtype == "F32" else
                     (integer % 2**32).to_bytes(4, "little") if t.dtype == "I32" else struct.pack("<q", integer))
            raw[at : at + size] = value
        else:
            bit %= size * 8
            raw[at + bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


@given(edits=VALUE_EDITS)
@settings(max_examples=max(10, settings().max_examples // 4))  # a googlenet load takes several times an alexnet one
@example(edits=[(0, 0, "padding", 0, 0.0, 0)])
@example(edits=[(3, 7, "set", 0, float("nan"), 0)])
@example(edits=[(0, 0, "set", 0, -0.0, 0)])
def test_changed_values_load_exactly_or_are_refused_by_name(worker, googlenet, edits):
    raw = _edit_values(googlenet, edits)
    judge_weights(load_outcome(worker, googlenet, weights=raw), raw, googlenet)


# -------------------------------------------------------------------------------------------- bytes anywhere

BYTE_EDITS = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "length"]),
              st.sampled_from(["header", "anywhere"]), st.integers(0, 2**32), st.binary(min_size=1, max_size=16)),
    min_size=1, max_size=4,
)


def _edit_bytes(raw: bytes, header_end: int, edits) -> bytes:
    out = bytearray(raw)
    for what, region, pick, payload in edits:
        at = pick % max(1, min(header_end, len(out)) if region == "header" else len(out))
        if what == "flip" and out:
            out[at] ^= 1 << (payload[0] % 8)
        elif what == "set" and out:
            out[at] = payload[0]
        elif what == "insert":
            out[at:at] = payload
        elif what == "delete":
            del out[at : at + len(payload)]
        elif what == "truncate":
            del out[at:]
        elif what == "append":
            out += payload
        elif what == "length" and len(out) >= 8:  # the header length, moved by a small or a huge amount
            n = struct.unpack("<Q", out[:8])[0]
            out[:8] = struct.pack("<Q", (n + int.from_bytes(payload[:8], "little", signed=True)) % 2**64)
    return bytes(out)


@given(edits=BYTE_EDITS)
@example(edits=[("truncate", "anywhere", 0, b"\0")])
@example(edits=[("length", "header", 0, b"\x01")])
@example(edits=[("append", "anywhere", 0, b"\0")])
def test_mutated_weight_bytes_load_as_read_or_are_refused(worker, alexnet, edits):
    raw = _edit_bytes(alexnet.weights, alexnet.data_start, edits)
    judge_weights(load_outcome(worker, alexnet, weights=raw), raw, alexnet)


def _edit_config_bytes(ckpt: Checkpoint, edits) -> bytes:
    return _edit_bytes(ckpt.config_text, len(ckpt.config_text), [e for e in edits if e[0] != "length"])


@given(edits=BYTE_EDITS)
@example(edits=[("truncate", "anywhere", 1, b"\0")])
def test_mutated_config_bytes_load_as_read_or_are_refused(worker, alexnet, edits):
    text = _edit_config_bytes(alexnet, edits)
    judge_config(load_outcome(worker, alexnet, config=text), text, alexnet)


# ------------------------------------------------------------------------------------------ header fields


class Raw(str):
    """JSON text written as it is (a number literal such as ``1e400``)."""


def dump(value: Any) -> str:
    """JSON text of ``value``, with :class:`Raw` text as it is and NaN / Infinity as Python writes them."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value)


NUMBER_LITERALS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,6})?([eE][-+]?[0-9]{1,4})?\Z").map(Raw)
NEAR_VALID = st.sampled_from([0, 1, 2, 3, 10, 11, 31, 32, 33, 64, 65, 255, 10**6, 10**6 + 1, 2**31, 2**63, 2**64, -1,
                              0.5, 1.0, 1.5, 10.0, -0.0, "10", "1", "", "xnor", "fp", "xnor_alexnet",
                              "xnor_googlenet", "fp_alexnet", "F32", "I32", "I64", True, False, None, [], {}])
KEYS = st.text(max_size=8) | st.sampled_from(["name", "architecture", "scheme", "num_classes", "in_chans",
                                              "small_input", "format_version", "input_bits", "version", "top1",
                                              "dtype", "shape", "data_offsets", "__metadata__", "packing"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | NUMBER_LITERALS | NEAR_VALID,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
HEADER_EDITS = st.lists(
    st.tuples(st.sampled_from(["dtype", "shape", "offsets", "drop", "add", "swap_offsets", "entry", "metadata_set",
                               "metadata_drop", "metadata", "pad", "reorder"]),
              st.integers(0, 2**20), st.integers(0, 2**20), JSON_VALUES),
    min_size=1, max_size=3,
)


def _perturbed(values: list[int], pick: int, payload: Any) -> Any:
    """A list of ints moved near their values (±1, swapped, dropped, extended, huge, negative), or ``payload``."""
    i = pick % max(1, len(values))
    changes = [lambda v: v[:i] + [v[i] + 1] + v[i + 1:] if v else [1], lambda v: v[:i] + [v[i] - 1] + v[i + 1:]
               if v else [-1], lambda v: v[::-1], lambda v: v[:i] + v[i + 1:], lambda v: v + [1],
               lambda v: v[:i] + [2**64 + 1] + v[i + 1:] if v else [2**64], lambda v: [float(x) for x in v],
               lambda v: payload]
    return changes[(pick // max(1, len(values))) % len(changes)](list(values))


def _edit_header(ckpt: Checkpoint, edits) -> bytes:
    header = json.loads(ckpt.weights[8 : ckpt.data_start])
    pad = 0
    for what, pick, pick2, payload in edits:
        names = [k for k in header if k != "__metadata__"]
        name = names[pick % len(names)] if names else "fc.bias"
        entry = header.get(name) if isinstance(header.get(name), dict) else {}
        meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
        keys = sorted(meta) or ["packing"]
        if what == "dtype":
            entry["dtype"] = sorted(ITEMSIZE)[pick2 % len(ITEMSIZE)] if pick2 % 2 else payload
        elif what == "shape":
            entry["shape"] = _perturbed(entry.get("shape", []), pick2, payload)
        elif what == "offsets":
            entry["data_offsets"] = _perturbed(entry.get("data_offsets", []), pick2, payload)
        elif what == "drop":
            header.pop(name, None)
        elif what == "add":
            header[f"{name}.{pick2}" if pick2 % 2 else str(payload)] = dict(entry) if pick2 % 3 else payload
        elif what == "swap_offsets" and names:
            other = header[names[pick2 % len(names)]]
            if isinstance(other, dict):
                entry["data_offsets"], other["data_offsets"] = other.get("data_offsets"), entry.get("data_offsets")
        elif what == "entry":
            header[name] = payload
        elif what == "metadata_set":
            meta[keys[pick2 % len(keys)] if pick2 % 2 else str(pick2)] = payload if pick2 % 3 else str(payload)
            header["__metadata__"] = meta
        elif what == "metadata_drop":
            meta.pop(keys[pick2 % len(keys)], None)
        elif what == "metadata":
            header["__metadata__"] = payload
        elif what == "pad":  # spaces after the JSON object, as safetensors writes them for alignment
            pad += pick2 % 64
        elif what == "reorder":
            items = list(header.items())
            header = dict(items[pick2 % max(1, len(items)) :] + items[: pick2 % max(1, len(items))])
        if what in ("dtype", "shape", "offsets") and name in header:
            header[name] = entry
    blob = (dump(header) + " " * pad).encode()
    return struct.pack("<Q", len(blob)) + blob + ckpt.weights[ckpt.data_start :]


@given(edits=HEADER_EDITS)
@example(edits=[("metadata_set", 0, 1, "extra")])  # an extra __metadata__ entry: loads
@example(edits=[("pad", 0, 7, None)])
@example(edits=[("dtype", 0, 1, None)])
@example(edits=[("shape", 0, 5, None)])
def test_edited_weight_headers_load_as_read_or_are_refused(worker, alexnet, edits):
    raw = _edit_header(alexnet, edits)
    judge_weights(load_outcome(worker, alexnet, weights=raw), raw, alexnet)


# ------------------------------------------------------------------------------------------------ config.json


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into ``value``'s objects and lists (the root excluded)."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    return [p for k, v in children for p in [(*prefix, k), *_paths(v, (*prefix, k))]]


CONFIG_EDITS = st.lists(
    st.tuples(st.sampled_from(["set", "delete", "add"]), st.integers(0, 2**20), KEYS, JSON_VALUES),
    min_size=1, max_size=3,
)


def _edit_config(ckpt: Checkpoint, edits) -> bytes:
    config = json.loads(ckpt.config_text)
    for what, pick, key, value in edits:
        paths = _paths(config)
        *parents, last = paths[pick % len(paths)] if paths else ("name",)
        target = config
        for p in parents:
            target = target[p]
        if what == "set":
            target[last] = value
        elif what == "delete":
            del target[last]
        elif isinstance(target, dict):
            target[key] = value
        else:
            target.append(value)
    return dump(config).encode()


@given(edits=CONFIG_EDITS)
@example(edits=[("add", 0, "notes", Raw("-1e999"))])  # read as -inf: refused
@example(edits=[("add", 0, "training", {"loss": Raw("1e400")})])
@example(edits=[("delete", 1024, "", None)])  # scheme.binary_gradient left out: its default, loads
def test_edited_configs_load_as_written_or_are_refused(worker, alexnet, edits):
    text = _edit_config(alexnet, edits)
    judge_config(load_outcome(worker, alexnet, config=text), text, alexnet)


@given(value=JSON_VALUES)
def test_random_json_configs_are_refused(worker, alexnet, value):
    text = dump(value).encode()
    judge_config(load_outcome(worker, alexnet, config=text), text, alexnet)
