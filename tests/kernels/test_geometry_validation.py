"""Conv geometry checked at the ops' boundary (zoo_kernels.geometry): hostile stride / padding / dilation / kernel
size / channels / bits give a TypeError or ValueError naming the argument and its value through the public ops,
a RuntimeError through the compiled ops (torch.ops.zoo_xnor_cpu), before anything is allocated; edge geometries
inside the limits still match the integer reference."""

import re

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from zoo_kernels import cpu, ops
from zoo_kernels.geometry import MAX_ELEMENTS, MAX_GEOMETRY, check_conv_sizes, conv_pair
from zoo_kernels.packing import pack_signs, pack_weight_signs
from zoo_kernels.reference import xnor_conv2d_reference

needs_kernel = pytest.mark.skipif(not cpu.cpu_kernel_available(), reason="the C++ extension could not be built here")

# (keyword arguments of the conv, error type, message); the input is 1 x 32 x 1 x 1 with a 1x1 kernel
HOSTILE = [
    ({"stride": 2**32, "padding": 2**31 - 1}, ValueError, "stride = 4294967296 is outside [1, 65536]"),
    ({"stride": 2**31}, ValueError, "stride = 2147483648 is outside [1, 65536]"),
    ({"dilation": 2**31}, ValueError, "dilation = 2147483648 is outside [1, 65536]"),
    ({"stride": 2**63}, ValueError, "stride = 9223372036854775808 is outside [1, 65536]"),
    ({"stride": -(2**63)}, ValueError, "stride = -9223372036854775808 is outside [1, 65536]"),
    ({"stride": 1.5}, TypeError, "stride must be an int or a pair of ints, got 1.5 (float)"),
    ({"stride": True}, TypeError, "stride must be an int or a pair of ints, got True (bool)"),
    ({"stride": (1, True)}, TypeError, "stride[1] must be an int, got True (bool)"),
    ({"stride": (1, 2.0)}, TypeError, "stride[1] must be an int, got 2.0 (float)"),
    ({"stride": (1, 2**32)}, ValueError, "stride[1] = 4294967296 is outside [1, 65536]"),
    ({"stride": (1, 1, 1)}, ValueError, "stride must be an int or a pair of ints, got 3 values: (1, 1, 1)"),
    ({"stride": ()}, ValueError, "stride must be an int or a pair of ints, got 0 values: ()"),
    ({"stride": "11"}, TypeError, "stride must be an int or a pair of ints, got '11' (str)"),
    ({"stride": None}, TypeError, "stride must be an int or a pair of ints, got None (NoneType)"),
    ({"stride": np.float64(2.0)}, TypeError, "stride must be an int or a pair of ints, got"),
    ({"stride": np.bool_(True)}, TypeError, "stride must be an int or a pair of ints, got"),
    ({"stride": 0}, ValueError, "stride = 0 is outside [1, 65536]"),
    ({"stride": MAX_GEOMETRY + 1}, ValueError, "stride = 65537 is outside [1, 65536]"),
    ({"padding": -1}, ValueError, "padding = -1 is outside [0, 65536]"),
    ({"padding": (0, 2**31 - 1)}, ValueError, "padding[1] = 2147483647 is outside [0, 65536]"),
    ({"padding": MAX_GEOMETRY + 1}, ValueError, "padding = 65537 is outside [0, 65536]"),
    ({"dilation": 0}, ValueError, "dilation = 0 is outside [1, 65536]"),
    ({"dilation": (-3, 1)}, ValueError, "dilation[0] = -3 is outside [1, 65536]"),
    ({"dilation": 0.5}, TypeError, "dilation must be an int or a pair of ints, got 0.5 (float)"),
    ({"stride": MAX_GEOMETRY, "padding": MAX_GEOMETRY}, ValueError,  # the first element is the number of bit planes
     "the padded input (planes, N, H + 2 ph, W + 2 pw, words) ["),
    ({"stride": MAX_GEOMETRY, "padding": MAX_GEOMETRY}, ValueError, ", 1, 131073, 131073, 1] has more than 4294967296"),
]


def _inputs(channels: int = 32, filters: int = 8, size: int = 1, kernel: int = 1):
    torch.manual_seed(0)
    x = torch.randn(1, channels, size, size)
    return x, pack_weight_signs(torch.randn(filters, channels, kernel, kernel)), torch.ones(filters)


@pytest.mark.parametrize(("kwargs", "error", "message"), HOSTILE)
@pytest.mark.parametrize("op", ["xnor_conv2d", "kbit_conv2d", "xnor_conv2d_packed", "xnor_input_scale"])
def test_public_ops_refuse_hostile_geometry(op, kwargs, error, message):
    x, wp, alpha = _inputs()
    geometry = {"stride": 1, "padding": 0, "dilation": 1, **kwargs}
    with pytest.raises(error) as info:
        if op == "xnor_conv2d":
            ops.xnor_conv2d(x, wp, alpha, 32, 1, input_scale=True, **geometry)
        elif op == "kbit_conv2d":
            ops.kbit_conv2d(x, wp, alpha, 32, 1, bits=2, input_scale=True, **geometry)
        elif op == "xnor_conv2d_packed":
            ops.xnor_conv2d_packed(pack_signs(x), wp, alpha, None, None, 32, **geometry)
        else:
            absmean = x.abs().mean(dim=1, keepdim=True)
            ops.xnor_input_scale(absmean, 1, **geometry)
    assert message in str(info.value)


@pytest.mark.parametrize("op", ["xnor_conv2d", "kbit_conv2d"])
@pytest.mark.parametrize(
    ("kernel_size", "error", "message"),
    [
        (0, ValueError, "kernel_size = 0 is outside [1, 65536]"),
        ((1, 2**17), ValueError, "kernel_size[1] = 131072 is outside [1, 65536]"),
        (1.0, TypeError, "kernel_size must be an int or a pair of ints, got 1.0 (float)"),
        ([1, None], TypeError, "kernel_size[1] must be an int, got None (NoneType)"),
    ],
)
def test_kernel_size_is_checked(op, kernel_size, error, message):
    x, wp, alpha = _inputs()
    with pytest.raises(error) as info:
        getattr(ops, op)(x, wp, alpha, 32, kernel_size)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("channels", "error", "message"),
    [
        (32.0, TypeError, "channels must be an int, got 32.0 (float)"),
        (True, TypeError, "channels must be an int, got True (bool)"),
        (0, ValueError, "channels = 0 is outside [1, 4294967296]"),
        (-32, ValueError, "channels = -32 is outside [1, 4294967296]"),
        (2**64, ValueError, "channels = 18446744073709551616 is outside [1, 4294967296]"),
    ],
)
def test_channels_are_checked(channels, error, message):
    x, wp, alpha = _inputs()
    for call in (
        lambda: ops.xnor_conv2d(x, wp, alpha, channels, 1),
        lambda: ops.kbit_conv2d(x, wp, alpha, channels, 1),
        lambda: ops.xnor_conv2d_packed(pack_signs(x), wp, alpha, None, None, channels, 1, 0, 1),
    ):
        with pytest.raises(error) as info:
            call()
        assert message in str(info.value)


def test_the_dispatched_op_checks_channels():
    x, wp, alpha = _inputs()
    with pytest.raises(ValueError, match=r"channels = 0 is outside \[1, 4294967296\]"):
        torch.ops.zoo_xnor.xnor_conv2d(pack_signs(x), wp, alpha, None, None, 0, [1, 1], [0, 0], [1, 1])


@pytest.mark.parametrize("bits", [np.int64(0), np.bool_(True), True, 2.0, 17, -(2**63), 2**64])
def test_bits_are_checked(bits):
    x, wp, alpha = _inputs()
    message = f"bits must be an integer from 1 to 16, got {re.escape(repr(bits))}$"
    with pytest.raises(ValueError, match=message):
        ops.kbit_conv2d(x, wp, alpha, 32, 1, bits=bits)
    with pytest.raises(ValueError, match=message):
        ops.pack_kbit_planes(x, bits)


def test_too_large_buffers_are_refused_before_allocation():
    """An output of 2^33 floats (32 GiB) and an expanded input of 2^33 words: refused, nothing allocated."""
    x = torch.randn(2**13, 32, 1, 1)
    wp = torch.zeros(2**20, 1, 1, 1, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"the output \(N, O, Ho, Wo\) \[8192, 1048576, 1, 1\] has more than"):
        ops.xnor_conv2d(x, wp, torch.ones(2**20), 32, 1)
    big = torch.zeros(1, 1, 1, 1, dtype=torch.int32).expand(1, 2**33, 1, 1)
    with pytest.raises(ValueError, match=r"the padded input .* \[1, 1, 8589934592, 1, 1\] has more than"):
        ops.xnor_conv2d_packed(big, wp[:8], torch.ones(8), None, None, 32, 1, 0, 1)


def test_the_element_limit_is_inclusive():
    kernel, pairs = [1, 1], ([1, 1], [0, 0], [1, 1])
    assert check_conv_sizes("t", 1, 1, 2**16, 2**16, 1, 1, kernel, *pairs) == (2**16, 2**16)
    with pytest.raises(ValueError, match="padded input"):
        check_conv_sizes("t", 1, 1, 2**16, 2**16 + 1, 1, 1, kernel, *pairs)
    assert check_conv_sizes("t", 4, 0, 2**15, 2**15, 1, 0, kernel, *pairs) == (2**15, 2**15)  # empty dims count 1
    with pytest.raises(ValueError, match="padded input"):
        check_conv_sizes("t", 5, 0, 2**15, 2**15, 1, 0, kernel, *pairs)
    assert MAX_ELEMENTS == 2**32


def test_numpy_integers_are_accepted():
    assert conv_pair(np.int64(3), "stride", "t") == [3, 3]
    assert conv_pair((np.int32(2), 5), "padding", "t") == [2, 5]
    assert all(type(v) is int for v in conv_pair((np.uint8(2), np.int16(5)), "dilation", "t"))
    x, wp, alpha = _inputs(channels=40, size=9, kernel=3)
    plain = ops.xnor_conv2d(x, wp, alpha, 40, 3, 2, 1, (1, 2))
    numpy_args = ops.xnor_conv2d(x, wp, alpha, np.int64(40), (np.int64(3), 3), np.int32(2), np.int64(1),
                                 (1, np.uint8(2)))
    assert torch.equal(plain, numpy_args)
    assert torch.equal(ops.kbit_conv2d(x, wp, alpha, 40, 3, bits=np.int64(2)), ops.kbit_conv2d(x, wp, alpha, 40, 3))


def test_the_dispatched_op_and_its_fake_check_too():
    """torch.ops.zoo_xnor.* take the lists the dispatcher parsed: the same checks in the implementation and in the
    fake (tracing) implementation."""
    x, wp, alpha = _inputs()
    xp = pack_signs(x)
    with pytest.raises(ValueError, match=r"stride\[0\] = 4294967296 is outside \[1, 65536\]"):
        torch.ops.zoo_xnor.xnor_conv2d(xp, wp, alpha, None, None, 32, [2**32, 1], [0, 0], [1, 1])
    with pytest.raises(ValueError, match=r"padding\[1\] = -1 is outside \[0, 65536\]"):
        torch.ops.zoo_xnor.input_scale(x.abs().mean(dim=1, keepdim=True), [1, 1], [1, 1], [0, -1], [1, 1])
    with pytest.raises(ValueError, match=r"w_packed's kernel 0x1 is outside \[1, 65536\]"):
        torch.ops.zoo_xnor.xnor_conv2d(xp, wp[:, :0], alpha, None, None, 32, [1, 1], [0, 0], [1, 1])
    with FakeTensorMode() as mode:
        fx, fw, fa = mode.from_tensor(xp), mode.from_tensor(wp), mode.from_tensor(alpha)
        with pytest.raises(ValueError, match=r"dilation\[1\] = 2147483648 is outside \[1, 65536\]"):
            torch.ops.zoo_xnor.xnor_conv2d(fx, fw, fa, None, None, 32, [1, 1], [0, 0], [1, 2**31])


# ------------------------------------------------------------------------------- the compiled ops, called directly

CPP_HOSTILE = [
    (([2**32, 2**32], [2**31 - 1, 2**31 - 1], [1, 1]), "stride[0] = 4294967296 is outside [1, 65536]"),
    (([2**31, 1], [0, 0], [1, 1]), "stride[0] = 2147483648 is outside [1, 65536]"),
    (([1, 1], [0, 0], [1, 2**31]), "dilation[1] = 2147483648 is outside [1, 65536]"),
    (([1, 2**62], [0, 0], [1, 1]), "stride[1] = 4611686018427387904 is outside [1, 65536]"),
    (([0, 1], [0, 0], [1, 1]), "stride[0] = 0 is outside [1, 65536]"),
    (([1, 1], [-1, 0], [1, 1]), "padding[0] = -1 is outside [0, 65536]"),
    (([1, 1], [0, 2**40], [1, 1]), "padding[1] = 1099511627776 is outside [0, 65536]"),
    (([1, 1], [0, 0], [-(2**63), 1]), "dilation[0] = -9223372036854775808 is outside [1, 65536]"),
    (([1, 1, 1], [0, 0], [1, 1]), "stride, padding and dilation must have 2 elements"),
    (([2**16, 2**16], [2**16, 2**16], [1, 1]),  # planes: 1, or 2 for kbit_conv2d_float
     "the padded input (planes, N, H + 2 ph, W + 2 pw, words) ["),
    (([2**16, 2**16], [2**16, 2**16], [1, 1]), ", 1, 131073, 131073, 1] has more than 4294967296 elements"),
]


def _compiled_calls(stride, padding, dilation):
    """Every compiled op that takes a conv geometry, called directly on a 1 x 32 x 1 x 1 input and a 1x1 kernel."""
    x, wp, alpha = _inputs()
    absmean = x.abs().mean(dim=1, keepdim=True)
    cpp = torch.ops.zoo_xnor_cpu
    return {
        "xnor_conv2d": lambda: cpp.xnor_conv2d(pack_signs(x), wp, alpha, None, None, 32, stride, padding, dilation,
                                               "auto"),
        "xnor_conv2d_float": lambda: cpp.xnor_conv2d_float(x, wp, alpha, None, None, None, 32, [1, 1], stride,
                                                           padding, dilation, True, None, False, "auto"),
        "kbit_conv2d_float": lambda: cpp.kbit_conv2d_float(x, wp, alpha, None, None, None, 32, [1, 1], stride,
                                                           padding, dilation, 2, True, None, False, "auto"),
        "input_scale": lambda: cpp.input_scale(absmean, [1, 1], stride, padding, dilation),
    }


@needs_kernel
@pytest.mark.parametrize(("geometry", "message"), CPP_HOSTILE)
@pytest.mark.parametrize("op", ["xnor_conv2d", "xnor_conv2d_float", "kbit_conv2d_float", "input_scale"])
def test_compiled_ops_refuse_hostile_geometry(op, geometry, message):
    with pytest.raises(RuntimeError) as info:
        _compiled_calls(*geometry)[op]()
    assert message in str(info.value)


@needs_kernel
@pytest.mark.parametrize("stride", [[2**63, 1], [1.5, 1]])
def test_the_schema_parser_refuses_what_int64_cannot_hold(stride):
    """Before the C++ checks run, the dispatcher refuses a value that is not an int64, naming the argument (it
    takes a bool as 1: at that level True and 1 are the same)."""
    x, wp, alpha = _inputs()
    with pytest.raises(RuntimeError, match="for argument 'stride'"):
        torch.ops.zoo_xnor_cpu.xnor_conv2d(pack_signs(x), wp, alpha, None, None, 32, stride, [0, 0], [1, 1], "auto")


@needs_kernel
def test_compiled_ops_refuse_bad_kernels_and_huge_buffers():
    """Before any allocation: a 32 GiB output, an expanded 2^33-word input, an empty kernel, too many bit planes."""
    cpp = torch.ops.zoo_xnor_cpu
    x, wp, alpha = _inputs()
    huge_w = torch.zeros(2**20, 1, 1, 1, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"the output \(N, O, Ho, Wo\) \[8192, 1048576, 1, 1\] has more than"):
        cpp.xnor_conv2d(torch.zeros(2**13, 1, 1, 1, dtype=torch.int32), huge_w, torch.ones(2**20), None, None, 32,
                        [1, 1], [0, 0], [1, 1], "auto")
    big = torch.zeros(1, 1, 1, 1, dtype=torch.int32).expand(1, 2**33, 1, 1)
    with pytest.raises(RuntimeError, match=r"the input \(planes, N, H, W, words\) \[1, 1, 8589934592, 1, 1\] has"):
        cpp.xnor_conv2d(big, wp, alpha, None, None, 32, [1, 1], [0, 0], [1, 1], "auto")
    with pytest.raises(RuntimeError, match=r"kernel_size\[0\] = 0 is outside \[1, 65536\]"):
        cpp.xnor_conv2d(pack_signs(x), wp[:, :0], alpha, None, None, 32, [1, 1], [0, 0], [1, 1], "auto")
    with pytest.raises(RuntimeError, match=r"kernel_size\[1\] = 0 is outside \[1, 65536\]"):
        cpp.input_scale(x[:, :1], [1, 0], [1, 1], [0, 0], [1, 1])
    with pytest.raises(RuntimeError, match="bits must be from 1 to 16, got 40"):
        cpp.kbit_conv2d_float(x, wp, alpha, None, None, None, 32, [1, 1], [1, 1], [0, 0], [1, 1], 40, False, None,
                              False, "auto")


@needs_kernel
def test_compiled_element_limit_is_inclusive():
    """An empty output (no filters) runs no kernel, so the limits at the boundary are checked without allocating:
    2^16 x 2^16 padded words pass, one more row does not."""
    cpp = torch.ops.zoo_xnor_cpu
    xp = torch.zeros(1, 2, 2, 1, dtype=torch.int32)
    no_filters = torch.zeros(0, 1, 1, 1, dtype=torch.int32)
    out = cpp.xnor_conv2d(xp, no_filters, torch.ones(0), None, None, 32, [2**16, 2**16], [2**15 - 1, 2**15 - 1],
                          [1, 1], "auto")
    assert out.shape == (1, 0, 1, 1)
    with pytest.raises(RuntimeError, match=r"\[1, 1, 65538, 65536, 1\] has more than 4294967296 elements"):
        cpp.xnor_conv2d(xp, no_filters, torch.ones(0), None, None, 32, [2**16, 2**16], [2**15, 2**15 - 1], [1, 1],
                        "auto")


# ------------------------------------------------------------------------------------ valid edges still compute

EDGES = [
    # (N, C, H, W, kernel, stride, padding, dilation)
    (1, 32, 5, 5, 3, MAX_GEOMETRY, 1, 1),  # the largest stride: one output pixel
    (2, 40, 1, 9, (1, 3), (1, MAX_GEOMETRY), (0, MAX_GEOMETRY), 1),  # the largest stride and padding
    (1, 33, 1, MAX_GEOMETRY + 4, (1, 2), 1, 0, (1, MAX_GEOMETRY)),  # the largest dilation, both taps inside
    (1, 70, 3, 300, (1, 2), (1, 7), (1, 500), (2, 300)),
    (0, 32, 4, 4, 3, 2, 1, 1),  # an empty batch
]


@pytest.mark.parametrize("edge", EDGES)
def test_edge_geometries_match_the_reference(edge):
    n, c, h, w, kernel, stride, padding, dilation = edge
    torch.manual_seed(1)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, weights = torch.randn(n, c, h, w), torch.randn(5, c, kh, kw)
    wp, alpha = pack_weight_signs(weights), torch.ones(5)
    expected = xnor_conv2d_reference(pack_signs(x), wp, c, stride, padding, dilation).float()
    assert expected.shape[0] == n and (n == 0 or expected.abs().sum() > 0)
    out = ops.xnor_conv2d(x, wp, alpha, c, kernel, stride, padding, dilation)
    assert torch.equal(out, expected)
    packed = ops.xnor_conv2d_packed(pack_signs(x), wp, alpha, None, None, c, stride, padding, dilation)
    assert torch.equal(packed, expected)
    one_bit = ops.kbit_conv2d(x, wp, alpha, c, kernel, stride, padding, dilation, bits=1)
    assert torch.equal(one_bit, expected)
