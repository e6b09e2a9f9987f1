import numpy as np
import pytest
import torch
from scipy import ndimage

from matebit.metrics import EvalSet, MetricError, compute_metric, swd_distance
from matebit.metrics.swd import laplacian_pyramid

G = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
G = np.outer(G, G) / 256.0


def _ref_pyramid(img, levels):
    """ProGAN's pyramid written out per channel with scipy (mirror borders)."""
    pyr = [img.astype(np.float64)]
    for _ in range(1, levels):
        cur = pyr[-1]
        down = np.stack([ndimage.convolve(cur[c], G, mode="mirror")[::2, ::2] for c in range(3)])
        up = np.zeros_like(cur)
        up[:, ::2, ::2] = down
        up = np.stack([ndimage.convolve(up[c], G * 4, mode="mirror") for c in range(3)])
        pyr[-1] = cur - up
        pyr.append(down)
    return pyr


def _ref_swd(outs, refs, seed):
    """Loop version of the documented recipe and draw order."""
    size = outs[0].shape[0]
    levels = 0
    while size >> levels >= 16:
        levels += 1
    prng, drng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])

    def descriptors(images):
        per = [[] for _ in range(levels)]
        for im in images:
            for lod, lev in enumerate(_ref_pyramid(im.transpose(2, 0, 1), levels)):
                h, w = lev.shape[1:]
                xs, ys = prng.integers(3, w - 3, 128), prng.integers(3, h - 3, 128)
                for x, y in zip(xs, ys):
                    per[lod].append(lev[:, y - 3:y + 4, x - 3:x + 4].copy())
        out = []
        for d in per:
            d = np.stack(d)
            for c in range(3):
                d[:, c] = (d[:, c] - d[:, c].mean()) / d[:, c].std()
            out.append(d.reshape(len(d), -1))
        return out

    a, b = descriptors(refs), descriptors(outs)
    vals = []
    for lod in range(levels):
        reps = []
        for _ in range(4):
            dirs = drng.standard_normal((147, 128))
            dirs /= np.linalg.norm(dirs, axis=0)
            pa, pb = np.sort(a[lod] @ dirs, axis=0), np.sort(b[lod] @ dirs, axis=0)
            reps.append(np.mean([abs(pa[i, j] - pb[i, j]) for i in range(len(pa)) for j in range(128)]))
        vals.append(1e3 * np.mean(reps))
    return vals


def _smooth(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    return [np.clip(255 * np.stack([np.sin(xx * rng.uniform(2, 6)) ** 2, yy, 0.5 + 0.4 * np.cos(3 * xx * yy * rng.uniform(1, 4))], 2), 0, 255)
            .astype(np.uint8) for _ in range(n)]


def _noise(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3)).astype(np.uint8) for _ in range(n)]


def test_swd_matches_loop_reference():
    outs, refs = _noise(2, 0), _smooth(2, 1)
    got = swd_distance(outs, refs, seed=7)
    ref = _ref_swd(outs, refs, seed=7)
    assert set(got) == {"swd@32", "swd@16", "swd"}
    assert got["swd@32"] == pytest.approx(ref[0], rel=1e-9)
    assert got["swd@16"] == pytest.approx(ref[1], rel=1e-9)
    assert got["swd"] == pytest.approx(np.mean(ref), rel=1e-9)


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    bands = laplacian_pyramid(x, 2)
    from matebit.metrics.swd import _blur

    up = torch.zeros_like(x)
    up[:, :, ::2, ::2] = bands[1]
    torch.testing.assert_close(bands[0] + _blur(up, gain=4.0), x)


def test_swd_same_set_near_zero_and_seeded():
    ims = _smooth(6, 0) + _noise(2, 3)
    same = compute_metric("swd", EvalSet(outputs=ims, targets=ims))
    diff = compute_metric("swd", EvalSet(outputs=_noise(8, 5), targets=ims))
    assert same.value < 0.25 * diff.value
    again = compute_metric("swd", EvalSet(outputs=ims, targets=ims))
    assert again.values == same.values
    other_seed = compute_metric("swd", EvalSet(outputs=ims, targets=ims), seed=1)
    assert other_seed.values != same.values


def test_swd_needs_equal_counts_and_square_sizes():
    with pytest.raises(MetricError, match="as many"):
        swd_distance(_noise(2, 0), _noise(3, 0))
    with pytest.raises(MetricError, match="square"):
        swd_distance([np.zeros((32, 16, 3), np.uint8)], [np.zeros((32, 16, 3), np.uint8)])
