"""The compiled CPU kernel (zoo_kernels.cpu): exact integers, fused epilogue, packing, threads and the fallback.

The extension is built once per session (cached under ~/.cache/zoo_kernels across sessions). Where it cannot be
built, the compiled-only tests skip and the fallback path is still checked.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from zoo_kernels import cpu
from zoo_kernels.kbit import pack_kbit_planes
from zoo_kernels.packing import pack_signs, pack_weight_signs, weight_scale
from zoo_kernels.reference import xnor_conv2d_reference

AVAILABLE = cpu.cpu_kernel_available()
needs_kernel = pytest.mark.skipif(not AVAILABLE, reason="the C++ extension could not be built here")
VARIANTS = cpu.available_variants() or ["scalar"]  # (the fallback: the compiled-only tests skip)

# (kernel, stride, padding, dilation)
GEOMETRIES = [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (3, 2, 0, 1)]


def sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t >= 0, 1.0, -1.0).double()


def int_conv(x, w, stride, padding, dilation) -> torch.Tensor:
    """Independent reference: conv2d(sign(x), sign(w)) in float64 (exact for these integer sums)."""
    return F.conv2d(sign(x), sign(w), None, stride, padding, dilation)


def run(x, w, stride, padding, dilation, variant="auto", alpha=None, scale=None, bias=None):
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    alpha = torch.ones(w.shape[0]) if alpha is None else alpha
    return cpu.xnor_conv2d_cpu(pack_signs(x), pack_weight_signs(w), alpha, scale, bias, x.shape[1],
                               pair(stride), pair(padding), pair(dilation), variant)


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("channels", [1, 3, 31, 33, 64, 100])
def test_integer_conv_is_exact(variant, channels):
    for (k, s, p, d), batch in itertools.product(GEOMETRIES, (1, 3)):
        x = torch.randn(batch, channels, 9, 8)
        x[x.abs() < 0.1] = 0.0
        w = torch.randn(5, channels, k, k)
        out = run(x, w, s, p, d, variant)
        assert out.dtype == torch.float32 and out.shape == int_conv(x, w, s, p, d).shape
        assert torch.equal(out.double(), int_conv(x, w, s, p, d)), (variant, channels, k, s, p, d, batch)


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("out_channels", [1, 32, 64, 96, 130, 256])
def test_output_channel_blocking(variant, out_channels):
    # panels of 128 filters (2 x 4 register blocks), the last one of 32 / 64 (4 x 2) / 96: full, partial, padded
    x, w = torch.randn(2, 70, 6, 5), torch.randn(out_channels, 70, 3, 3)
    assert torch.equal(run(x, w, 1, 1, 1, variant).double(), int_conv(x, w, 1, 1, 1))


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
def test_pixel_tiles_rounded_up(variant):
    # 96 filters (a 3-vector panel: tiles of 42 pixels rounded up to 44) over 28 x 28 = 784 pixels: 18 tiles, where
    # the first count (19) would have left the last tile empty (GoogLeNet's inception 3a, 3x3 branch)
    x, w = torch.randn(1, 32, 28, 28), torch.randn(96, 32, 3, 3)
    assert torch.equal(run(x, w, 1, 1, 1, variant).double(), int_conv(x, w, 1, 1, 1))
    for out_channels, size, batch in itertools.product((32, 64, 96, 160, 224), (7, 13, 28), (1, 3)):
        # every panel width (1 to 4 vectors, and 5 = 4 + 1) against pixel counts that divide the tiles unevenly
        x, w = torch.randn(batch, 40, size, size), torch.randn(out_channels, 40, 3, 3)
        assert torch.equal(run(x, w, 1, 1, 1, variant).double(), int_conv(x, w, 1, 1, 1)), (out_channels, size)


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
def test_odd_geometries(variant):
    cases = [  # kernel, stride, padding, dilation, input size: windows partly or entirely on the padding
        ((1, 3), (1, 2), (0, 1), (1, 1), (5, 7)),
        ((3, 1), (3, 1), (1, 0), (1, 3), (11, 6)),
        ((5, 5), (2, 2), (2, 2), (1, 1), (9, 9)),
        ((2, 2), (1, 1), (1, 1), (1, 1), (4, 4)),
        ((3, 3), (1, 1), (3, 3), (3, 1), (3, 3)),
        ((3, 3), (1, 1), (2, 2), (2, 2), (2, 3)),
    ]
    for k, s, p, d, size in cases:
        x, w = torch.randn(2, 37, *size), torch.randn(9, 37, *k)
        assert torch.equal(run(x, w, s, p, d, variant).double(), int_conv(x, w, s, p, d)), (k, s, p, d, size)


@needs_kernel
def test_large_layer_many_tiles_and_sweeps():
    # K = 9 * 512 bits: several 256-step sweeps of the AVX2 loop; 14 x 14 x 2 pixels: several tiles
    x, w = torch.randn(2, 512, 14, 14), torch.randn(64, 512, 3, 3)
    assert torch.equal(run(x, w, 1, 1, 1).double(), int_conv(x, w, 1, 1, 1))
    x, w = torch.randn(3, 64, 30, 30), torch.randn(64, 64, 3, 3)
    assert torch.equal(run(x, w, 2, 1, 1).double(), int_conv(x, w, 2, 1, 1))


@needs_kernel
@pytest.mark.parametrize("channels, kernel, dilation", [
    (530, (3, 3), (1, 1)),  # 17 words: a kernel row of 408 steps cut into 7 unequal runs (58 or 59 steps)
    (530, (3, 3), (1, 2)),  # dilated along the row: taps are not contiguous, one segment per tap
    (100, (1, 7), (1, 1)),  # a 7-tap row of 4 words: 224 steps, 4 runs of 56
    (64, (5, 5), (2, 1)),   # 2 words, 5 taps: 80 steps, 2 runs of 40
])
def test_kernel_row_segments(channels, kernel, dilation):
    # The AVX2 path reads a kernel row's taps as one segment of the pixel's bytes (dw == 1) and cuts it into runs
    # whose uint8 counts are flushed in between; every cut must land on the exact integer result.
    x, w = torch.randn(2, channels, 9, 11), torch.randn(40, channels, *kernel)
    padding = tuple(d * (k // 2) for k, d in zip(kernel, dilation, strict=True))
    for variant in VARIANTS:
        out = run(x, w, 1, padding, dilation, variant).double()
        assert torch.equal(out, int_conv(x, w, 1, padding, dilation)), (variant, channels, kernel, dilation)


@needs_kernel
def test_large_output_streamed():
    # 5 x 64 x 64 x 64 float32 outputs (5.2 MB): past the size where the epilogue writes with non-temporal stores
    x, w = torch.randn(5, 64, 64, 64), torch.randn(64, 64, 3, 3)
    alpha, bias, scale = weight_scale(w), torch.randn(64), torch.rand(5, 1, 64, 64) + 0.1
    out = run(x, w, 1, 1, 1, "auto", alpha, scale, bias)
    expected = int_conv(x, w, 1, 1, 1) * alpha.double().view(1, -1, 1, 1) * scale.double() + bias.double().view(
        1, -1, 1, 1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
def test_long_filters_overflow_no_counter(variant):
    # 8192 x 3 x 3 bits per filter: more nibble steps than uint16 sums hold, so the int32 sums take over
    x, w = torch.randn(1, 8192, 3, 4), torch.randn(5, 8192, 3, 3)
    assert torch.equal(run(x, w, 1, 1, 1, variant).double(), int_conv(x, w, 1, 1, 1))


@needs_kernel
def test_output_is_channels_last():
    out = run(torch.randn(2, 40, 6, 5), torch.randn(8, 40, 3, 3), 1, 1, 1)
    assert out.shape == (2, 8, 6, 5) and out.is_contiguous(memory_format=torch.channels_last)


@needs_kernel
def test_weight_cache_follows_the_weights():
    x, w1, w2 = torch.randn(2, 64, 7, 7), torch.randn(128, 64, 3, 3), torch.randn(128, 64, 3, 3)
    xp, wp = pack_signs(x), pack_weight_signs(w1)

    def conv(weights):
        ones = torch.ones(weights.shape[0])
        return cpu.xnor_conv2d_cpu(xp, weights, ones, None, None, 64, (1, 1), (1, 1), (1, 1)).double()

    before = cpu.cached_weights()
    assert torch.equal(conv(wp), int_conv(x, w1, 1, 1, 1)) and cpu.cached_weights() == before + 1
    assert torch.equal(conv(wp), int_conv(x, w1, 1, 1, 1)) and cpu.cached_weights() == before + 1  # a cache hit
    wp.copy_(pack_weight_signs(w2))  # in place: the cached panels are stale
    assert torch.equal(conv(wp), int_conv(x, w2, 1, 1, 1))
    assert torch.equal(conv(wp[:64]), int_conv(x, w2[:64], 1, 1, 1))  # a view of the same storage
    wp.data.copy_(pack_weight_signs(w1))  # through .data: no version counter sees it, the fingerprint does
    assert torch.equal(conv(wp), int_conv(x, w1, 1, 1, 1))
    wp.data[5, 1, 2, 1] ^= -(1 << 31)  # one bit of one filter: channel 63 at tap (1, 2)
    w3 = w1.clone()
    w3[5, 63, 1, 2] = -w3[5, 63, 1, 2]
    assert torch.equal(conv(wp), int_conv(x, w3, 1, 1, 1))
    del wp
    assert cpu.cached_weights() == before  # entries of freed weights are dropped
    with torch.inference_mode():  # inference tensors (no version counter) are cached by their fingerprint too
        wi = pack_weight_signs(w1)
        assert torch.equal(conv(wi), int_conv(x, w1, 1, 1, 1)) and cpu.cached_weights() == before + 1
        wi.copy_(pack_weight_signs(w2))  # the stale entry is replaced, not kept beside the new one
        assert torch.equal(conv(wi), int_conv(x, w2, 1, 1, 1)) and cpu.cached_weights() == before + 1


def test_fingerprint_sees_every_change_of_the_contents():
    w = pack_weight_signs(torch.randn(64, 40, 3, 3))
    base = cpu.fingerprint(w)
    assert cpu.fingerprint(w.clone()) == base  # contents, not storage
    flat = w.view(-1)
    for i in (0, 1, 7, flat.numel() // 2, flat.numel() - 1):  # one bit of one word, each place of the lanes
        for bit in (0, 17, 31):
            edited = flat.clone()
            edited[i] ^= 1 << bit if bit < 31 else -(1 << 31)
            assert cpu.fingerprint(edited.view_as(w)) != base
    assert cpu.fingerprint(w.flip(0)) != base  # filters swapped
    assert cpu.fingerprint(w[:, :, :, :1].clone()) != cpu.fingerprint(w[:, :, :, 1:].clone())
    alpha = torch.rand(64)
    assert cpu.fingerprint(w, alpha) != cpu.fingerprint(w, alpha * 2) != cpu.fingerprint(w, alpha)


@needs_kernel
def test_non_contiguous_packed_inputs():
    x, w = torch.randn(2, 33, 8, 8), torch.randn(4, 33, 3, 3)
    xp = pack_signs(x).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)  # same values, other strides
    wp = pack_weight_signs(w)
    out = cpu.xnor_conv2d_cpu(xp, wp, torch.ones(4), None, None, 33, (1, 1), (1, 1), (1, 1))
    assert torch.equal(out.double(), int_conv(x, w, 1, 1, 1))


@needs_kernel
@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_epilogue(variant):
    x, w = torch.randn(3, 40, 7, 9), torch.randn(6, 40, 3, 3)
    alpha, bias = weight_scale(w), torch.randn(6)
    scale = torch.rand(3, 1, 4, 5) + 0.1
    out = run(x, w, 2, 1, 1, variant, alpha, scale, bias)
    expected = int_conv(x, w, 2, 1, 1) * alpha.double().view(1, -1, 1, 1) * scale.double() + bias.double().view(
        1, -1, 1, 1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    no_scale = run(x, w, 2, 1, 1, variant, alpha, None, bias)
    torch.testing.assert_close(no_scale.double(), int_conv(x, w, 2, 1, 1) * alpha.double().view(1, -1, 1, 1)
                               + bias.double().view(1, -1, 1, 1), rtol=1e-5, atol=1e-5)


@needs_kernel
def test_threads_give_identical_results():
    x, w = torch.randn(4, 96, 10, 10), torch.randn(80, 96, 3, 3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(x, w, 1, 1, 1)
        torch.set_num_threads(max(2, threads))
        many = run(x, w, 1, 1, 1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@needs_kernel
def test_compiled_packing():
    for c in (1, 31, 32, 33, 100, 256):
        x = torch.randn(2, c, 5, 7)
        x[x.abs() < 0.1] = 0.0
        x[0, 0, 0, 0] = float("nan")
        cl = x.contiguous(memory_format=torch.channels_last)
        for layout in (x, cl, x.half(), x.double(), cl.double(), cl.bfloat16()):
            packed, absmean = cpu.pack_signs_cpu(layout, absmean=True)
            assert torch.equal(packed, pack_signs(layout))
            torch.testing.assert_close(absmean, layout.float().abs().mean(dim=1, keepdim=True), equal_nan=True)
    tiny = torch.tensor([-1e-300, 1e-300, -0.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1)  # float32: +-0.0
    for layout in (tiny, tiny.contiguous(memory_format=torch.channels_last)):
        assert cpu.pack_signs_cpu(layout)[0].item() == 0b1110
    sliced = torch.randn(2, 80, 10, 9)[:, 1::2, ::3]
    assert torch.equal(cpu.pack_signs_cpu(sliced)[0], pack_signs(sliced))
    assert cpu.pack_signs_cpu(torch.randn(0, 3, 2, 2))[0].shape == (0, 2, 2, 1)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 1, 5, 7), (2, 31, 9, 9), (1, 33, 16, 16), (3, 100, 3, 30)])
def test_packing_with_fused_affine(layout, shape):
    """sign(x * scale + shift) and mean_c |x * scale + shift| against an unfused float64 computation."""
    torch.manual_seed(0)
    c = shape[1]
    x, scale, shift = torch.randn(shape) * 3, torch.randn(c), torch.randn(c)
    scale[0] = -scale[0].abs()  # a negative BatchNorm scale flips the comparison
    y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    packed, absmean = cpu.pack_signs_cpu(x, True, scale, shift)
    clear = (y.abs() > 1e-5).all(dim=1)  # pixels whose float32 rounding cannot flip a sign
    assert clear.float().mean() > 0.9
    assert torch.equal(packed[clear], pack_signs(y)[clear])
    torch.testing.assert_close(absmean.double(), y.abs().mean(dim=1, keepdim=True), rtol=1e-6, atol=1e-6)
    assert torch.equal(cpu.pack_signs_cpu(x, False, torch.ones(c), torch.zeros(c))[0], pack_signs(x))


@pytest.mark.parametrize("shape", [(2, 40, 9, 9), (1, 64, 12, 11), (2, 3, 1, 70)])
def test_nchw_packing_blocks(shape):
    # planes of more than one 64-pixel block and a partial last block, with NaN, zeros and -0.0
    x = torch.randn(shape)
    x[x.abs() < 0.2] = 0.0
    x[:, 0, 0, :3] = torch.tensor([float("nan"), -0.0, float("-inf")])
    packed, absmean = cpu.pack_signs_cpu(x, absmean=True)
    assert torch.equal(packed, pack_signs(x))
    assert torch.equal(cpu.pack_signs_cpu(x)[0], packed)  # the block kernels without |x| sums
    torch.testing.assert_close(absmean, x.abs().mean(dim=1, keepdim=True), equal_nan=True)


def test_input_scale():
    a = torch.rand(3, 1, 9, 8)
    for k, s, p, d in [((3, 3), 1, 1, 1), ((3, 3), 2, 1, 1), ((3, 3), 1, 2, 2), ((1, 1), 1, 0, 1), ((5, 3), 2, 3, 1)]:
        k2 = (s, s), (p, p), (d, d)
        box = torch.full((1, 1, *k), 1.0 / (k[0] * k[1]), dtype=torch.float64)
        expected = F.conv2d(a.double(), box, None, s, p, d)
        out = cpu.input_scale_cpu(a, k, *k2)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-7)
    assert cpu.input_scale_cpu(torch.rand(0, 1, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1)).shape == (0, 1, 4, 4)


@needs_kernel
def test_empty_batch():
    xp, wp = pack_signs(torch.randn(0, 33, 5, 5)), pack_weight_signs(torch.randn(4, 33, 3, 3))
    out = cpu.xnor_conv2d_cpu(xp, wp, torch.ones(4), None, None, 33, (1, 1), (0, 0), (1, 1))
    assert out.shape == (0, 4, 3, 3)


@needs_kernel
def test_kernel_checks_arguments():
    xp, wp = pack_signs(torch.randn(1, 33, 5, 5)), pack_weight_signs(torch.randn(4, 33, 3, 3))
    with pytest.raises(RuntimeError, match="channels"):
        cpu.xnor_conv2d_cpu(xp, wp, torch.ones(4), None, None, 70, (1, 1), (0, 0), (1, 1))
    with pytest.raises(RuntimeError, match="alpha"):
        cpu.xnor_conv2d_cpu(xp, wp, torch.ones(3), None, None, 33, (1, 1), (0, 0), (1, 1))
    with pytest.raises(RuntimeError, match="scale"):
        cpu.xnor_conv2d_cpu(xp, wp, torch.ones(4), torch.ones(2), None, 33, (1, 1), (0, 0), (1, 1))


def test_a_failed_build_is_an_error_when_the_kernels_are_required(monkeypatch):
    saved = dict(cpu._state)
    monkeypatch.delenv("ZOO_KERNELS_DISABLE_CPP", raising=False)
    monkeypatch.setenv("ZOO_KERNELS_REQUIRE_CPP", "1")
    monkeypatch.setattr(cpu, "_build", lambda: (_ for _ in ()).throw(RuntimeError("no compiler")))
    cpu._state.update(loaded=False, ok=False, error=None)
    try:
        with pytest.raises(RuntimeError, match="ZOO_KERNELS_REQUIRE_CPP is set .* RuntimeError: no compiler"):
            cpu.load_extension()
    finally:
        cpu._state.clear()
        cpu._state.update(saved)


def test_fallback_when_the_build_fails(monkeypatch):
    saved = dict(cpu._state)
    monkeypatch.delenv("ZOO_KERNELS_DISABLE_CPP", raising=False)
    monkeypatch.delenv("ZOO_KERNELS_REQUIRE_CPP", raising=False)
    monkeypatch.setattr(cpu, "_build", lambda: (_ for _ in ()).throw(RuntimeError("no compiler")))
    cpu._state.update(loaded=False, ok=False, error=None)
    try:
        x, w = torch.randn(2, 33, 6, 6), torch.randn(3, 33, 3, 3)
        with pytest.warns(RuntimeWarning, match="no compiler"):
            assert not cpu.cpu_kernel_available()
        out = run(x, w, 1, 1, 1, bias=torch.ones(3))
        assert torch.equal(out.double(), int_conv(x, w, 1, 1, 1) + 1)
        packed, absmean = cpu.pack_signs_cpu(x, absmean=True)
        assert torch.equal(packed, pack_signs(x)) and absmean.shape == (2, 1, 6, 6)
        assert cpu.input_scale_cpu(absmean, (3, 3), (2, 2), (1, 1), (1, 1)).shape == (2, 1, 3, 3)
        assert "fallback" in cpu.kernel_info()
    finally:
        cpu._state.clear()
        cpu._state.update(saved)


def test_reference_and_compiled_agree_on_random_layers():
    torch.manual_seed(1)
    for _ in range(3):
        c, o, k = int(torch.randint(1, 90, ())), int(torch.randint(1, 70, ())), int(torch.randint(1, 4, ()))
        x, w = torch.randn(2, c, 8, 7), torch.randn(o, c, k, k)
        ref = xnor_conv2d_reference(pack_signs(x), pack_weight_signs(w), c, 1, k // 2, 1)
        assert torch.equal(run(x, w, 1, k // 2, 1).double(), ref.double())


@needs_kernel
def test_random_geometries_every_variant():
    # Random layers across the tile and pair logic: odd and tiny widths (a pair's second place past the row), strides
    # up to 3, dilation, rectangular kernels, 1-3 images, 1-4 filter vectors per panel and several panels.
    gen = torch.Generator().manual_seed(5)

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (), generator=gen))

    for _ in range(24):
        kh, kw = draw(1, 4), draw(1, 4)
        stride, dilation = (draw(1, 3), draw(1, 3)), (draw(1, 2), draw(1, 2))
        padding = (draw(0, 2), draw(0, 2))
        h = max(draw(1, 12), dilation[0] * (kh - 1) + 1 - 2 * padding[0])
        w = max(draw(1, 12), dilation[1] * (kw - 1) + 1 - 2 * padding[1])
        c, o, n = draw(1, 130), draw(1, 200), draw(1, 3)
        x, wt = torch.randn(n, c, h, w, generator=gen), torch.randn(o, c, kh, kw, generator=gen)
        expected = int_conv(x, wt, stride, padding, dilation)
        for variant in VARIANTS:
            got = run(x, wt, stride, padding, dilation, variant).double()
            assert torch.equal(got, expected), (variant, (n, c, h, w), (o, kh, kw), stride, padding, dilation)


@needs_kernel
def test_float_input_conv_equals_its_steps():
    # The float-input conv (one call: packing with a fused BatchNorm affine, K, the conv, a residual with ReLU) gives
    # the same floats as packing, K and the conv in turn, for tall images, strides, dilation, rectangular kernels,
    # both layouts, NaN, and 1 or 2 threads.
    gen = torch.Generator().manual_seed(7)

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (), generator=gen))

    threads = torch.get_num_threads()
    try:
        for case in range(12):
            kh, kw = draw(1, 3), draw(1, 3)
            stride, dilation, padding = (draw(1, 2), draw(1, 2)), (draw(1, 2), 1), (draw(0, 2), draw(0, 1))
            h = max(draw(20, 90), dilation[0] * (kh - 1) + 1)
            w = max(draw(1, 40), kw)
            c, o, n = draw(1, 80), draw(1, 70), draw(1, 3)
            x = torch.randn(n, c, h, w, generator=gen)
            x[0, 0, 0, 0] = float("nan")
            if case % 3 == 1:
                x = x.contiguous(memory_format=torch.channels_last)
            wt = torch.randn(o, c, kh, kw, generator=gen)
            wp, alpha = pack_weight_signs(wt), weight_scale(wt)
            affine = (torch.randn(c, generator=gen), torch.randn(c, generator=gen)) if case % 2 else (None, None)
            packed, absmean = cpu.pack_signs_cpu(x, True, *affine)
            scale = cpu.input_scale_cpu(absmean, (kh, kw), stride, padding, dilation)
            for input_scale, threads_now in itertools.product((False, True), (1, 2)):
                torch.set_num_threads(threads_now)
                expected = cpu.xnor_conv2d_cpu(packed, wp, alpha, scale if input_scale else None, None, c, stride,
                                               padding, dilation)
                residual = torch.randn(expected.shape, generator=gen) if case % 4 == 0 else None
                got = cpu.xnor_conv2d_float_cpu(x, wp, alpha, None, *affine, c, (kh, kw), stride, padding, dilation,
                                                input_scale, residual, residual is not None)
                if residual is not None:
                    expected = (expected + residual).relu()
                where = (case, (n, c, h, w), (o, kh, kw), stride, padding, dilation, input_scale, threads_now)
                torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m, where=where: f"{m} {where}")
    finally:
        torch.set_num_threads(threads)


def _kbit_inputs(shape, bits):
    """Random values, a third of them exactly on a level boundary (n (y + 1) / 2 + 1/2 an integer), and a NaN."""
    n = 2**bits - 1
    x = torch.randn(shape) * 0.8
    on_boundary = 2 * (torch.randint(0, n + 1, shape).float() - 0.5) / n - 1
    x = torch.where(torch.rand(shape) < 0.3, on_boundary, x)
    x.view(-1)[0] = float("nan")
    return x


@needs_kernel
@pytest.mark.parametrize("bits", [1, 2, 3, 8, 16])
def test_compiled_kbit_planes(bits):
    for c in (1, 3, 31, 32, 33, 100):
        for shape in [(2, c, 5, 7), (1, c, 9, 9), (2, c, 1, 70)]:  # partial 64-pixel blocks, several blocks
            x = _kbit_inputs(shape, bits)
            for layout in (x, x.contiguous(memory_format=torch.channels_last), x.double(),
                           x.double().contiguous(memory_format=torch.channels_last)):
                assert torch.equal(cpu.pack_kbit_planes_cpu(layout, bits), pack_kbit_planes(layout, bits))
    assert cpu.pack_kbit_planes_cpu(torch.randn(0, 3, 2, 2), 2).shape == (2, 0, 2, 2, 1)


@needs_kernel
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_compiled_kbit_planes_with_fused_affine(layout):
    """The planes of q_k(x * scale + shift) against an unfused float64 affine, where float32 rounding cannot move a
    value across a level boundary."""
    x, scale, shift = torch.randn(2, 40, 9, 9), torch.randn(40), torch.randn(40) * 0.3
    y = x.double() * scale.double().view(1, -1, 1, 1) + shift.double().view(1, -1, 1, 1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    planes = cpu.pack_kbit_planes_cpu(x, 3, scale, shift)
    t = 7 * (y.clamp(-1, 1) + 1) / 2 + 0.5
    clear = ((t - t.round()).abs() > 1e-4).all(dim=1)  # pixels with no channel within rounding of a boundary
    assert clear.float().mean() > 0.9
    expected = pack_kbit_planes(y, 3)
    assert torch.equal(planes[:, clear], expected[:, clear])


@pytest.mark.parametrize("variant", ["auto", "scalar", "avx2", "avx2_pairs", "avx512"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_conv_over_bit_planes_is_the_weighted_sum_of_plane_convs(variant, bits):
    """A 5D x_packed of bit planes: int = sum_b 2^b int_b exactly (Horner sums in every inner loop), checked with an
    alpha of 1 / (2^bits - 1) times powers of two, so that every output is exact in float32."""
    if variant != "auto" and variant not in cpu.available_variants():
        pytest.skip(f"variant {variant} does not run here ({cpu.kernel_info()})")
    n = 2**bits - 1
    cases = [(40, 24, (9, 11), 3, 1, 1, 1), (64, 40, (7, 8), 3, 2, 1, 1), (5, 7, (6, 5), 1, 1, 0, 1),
             (33, 9, (7, 7), 3, 1, 2, 2), (512, 32, (3, 3), 3, 1, 1, 1)]  # 512 x 3 x 3 at 4 bits: int32 sums
    for c, o, size, k, s, p, d in cases:
        x, w = torch.randn(bits, 2, c, *size), torch.randn(o, c, k, k)
        planes, wp = torch.stack([pack_signs(p_) for p_ in x]), pack_weight_signs(w)
        expected = sum((2**b) * xnor_conv2d_reference(planes[b], wp, c, s, p, d) for b in range(bits))
        alpha = 2.0 ** torch.randint(-2, 3, (o,)).float()
        out = cpu.xnor_conv2d_cpu(planes, wp, alpha / n, None, None, c, (s, s), (p, p), (d, d), variant)
        torch.testing.assert_close(out.double() * n, expected.double() * alpha.double().view(1, -1, 1, 1),
                                   rtol=1e-6, atol=1e-4)
