"""wsss.pseudo.crf_torch: the PyTorch dense CRF against pydensecrf and against its definition.

Agreement: the label CRF (argmax maps) and the probability CRF (the refined probabilities) on
small synthetic scenes and textured noise, with the configurations the project uses. The bar is
the one for swapping backends: >= 99.9 % of pixels with the same argmax, probabilities within
1e-5. On the reference build (x86-64, pydensecrf compiled for SSE2, glibc's expf) the torch CRF
repeats the C++'s float32 operations in the C++'s order, so the results are bitwise equal there
(``test_bitwise_equal_on_this_build``); 1e-5 leaves room for a pydensecrf compiled otherwise
(FMA contraction, another libm), whose last-bit differences ten mean-field iterations can carry
to about 1e-6.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import platform

import numpy as np
import pytest
import torch

from wsss.config import CRFConfig
from wsss.pseudo import crf_torch as ct

pydensecrf = pytest.importorskip("pydensecrf.densecrf")
from wsss.pseudo.crf import crf_labels, crf_probabilities

GSLM = CRFConfig()  # the label CRF's defaults (GSLM's values)
IRN = CRFConfig(gauss_compat=3.0)  # IRN's label CRF
DEEPLAB = CRFConfig(gauss_sxy=1.0, gauss_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_compat=4.0)
SIZES = [(40, 50), (64, 48), (37, 41)]  # 37 x 41 = 1517 pixels: not a multiple of 4 (the SSE padding lanes)


def scene(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scene (image, GT labels 0..3) from the project's generator."""
    from wsss.data.synthetic import class_styles, render_scene

    img, label, _, _ = render_scene(np.random.default_rng(seed), min(h, w), class_styles(3), hw=(h, w))
    return img, label


def textured(seed: int, h: int, w: int) -> np.ndarray:
    """Smooth colour blobs plus pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3))
    yy, xx = np.mgrid[0:h, 0:w] / 8.0
    img = coarse[yy.astype(int), xx.astype(int)] + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def label_maps(gt: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Label maps for n labels: the GT folded into 0..n-1 with 15 % of pixels flipped, and blocks."""
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(gt.shape) < 0.15, rng.integers(0, n, gt.shape), gt % n)
    h, w = gt.shape
    blocks = (np.arange(h)[:, None] // 9 + np.arange(w)[None] // 13) % n
    return [noisy, blocks]


def inference_q(img: np.ndarray, unary: np.ndarray, p: CRFConfig) -> np.ndarray:
    """pydensecrf's Q [C, H*W] for a unary [C, H*W], as wsss.pseudo.crf builds the CRF."""
    from wsss.pseudo.crf import _dense_crf

    d = _dense_crf(img, unary.shape[0], p)
    d.setUnaryEnergy(np.ascontiguousarray(unary, np.float32))
    return np.asarray(d.inference(p.iters), np.float32)


def torch_q(img: np.ndarray, unary: np.ndarray, p: CRFConfig) -> np.ndarray:
    return ct.TorchDenseCRF([img], p).inference(torch.from_numpy(unary)[:, None])[:, 0].numpy()


# --------------------------------------------------------------------------
# Agreement with pydensecrf
# --------------------------------------------------------------------------
@pytest.mark.parametrize("p", [GSLM, IRN], ids=["gslm", "irn"])
@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_label_crf_agrees(p, n, hw):
    img, gt = scene(n + hw[0], *hw)
    maps = label_maps(gt, n, seed=n)
    ref = crf_labels(img, maps, n, p)
    out = ct.crf_labels_torch(img, maps, n, p)
    assert len(out) == len(ref)
    for a, b in zip(ref, out):
        assert a.shape == b.shape and b.dtype == np.int64
        assert (a == b).mean() >= 0.999
    # the refined marginals themselves
    from pydensecrf.utils import unary_from_labels

    u = unary_from_labels(maps[0], n, gt_prob=p.gt_prob, zero_unsure=False)
    np.testing.assert_allclose(torch_q(img, u, p), inference_q(img, u, p), rtol=0, atol=1e-5)


@pytest.mark.parametrize("n", [2, 5, 21])
@pytest.mark.parametrize("hw", SIZES[:2], ids=lambda s: f"{s[0]}x{s[1]}")
def test_probability_crf_agrees(n, hw):
    rng = np.random.default_rng(n)
    img = textured(n, *hw)
    logits = rng.normal(0, 2, (n, *hw)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    ref = crf_probabilities(img, probs, DEEPLAB)
    out = ct.crf_probabilities_torch(img, probs, DEEPLAB)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    assert (out.argmax(0) == ref.argmax(0)).mean() >= 0.999


@pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux",
                    reason="bitwise equality is a property of the reference build (x86-64 Linux)")
def test_bitwise_equal_on_this_build():
    """Every float operation in the C++'s order: the same bits, label and probability CRF."""
    from pydensecrf.utils import unary_from_labels, unary_from_softmax

    for k, (h, w) in enumerate(SIZES):
        img, gt = scene(k, h, w)
        for n in (2, 3, 4, 6, 9):
            u = unary_from_labels(label_maps(gt, n, k)[0], n, gt_prob=0.7, zero_unsure=False)
            assert np.array_equal(torch_q(img, u, GSLM), inference_q(img, u, GSLM)), (h, w, n)
        pr = np.random.default_rng(k).dirichlet(np.ones(5), (h, w)).transpose(2, 0, 1).astype(np.float32)
        u = unary_from_softmax(pr)
        assert np.array_equal(torch_q(img, u, DEEPLAB), inference_q(img, u, DEEPLAB)), (h, w)


@pytest.mark.skipif(platform.machine() != "x86_64" or platform.system() != "Linux",
                    reason="bitwise equality is a property of the reference build (x86-64 Linux)")
def test_padding_lanes_of_the_sse_build():
    """37 x 41 pixels leave 3 empty lanes in the SSE build's last block of 4: their all-zero
    features add lattice points next to a dark-grey patch's, which the blur then carries. With
    them the result is pydensecrf's bits; the lattice of the pixels alone has fewer points (its
    result differed by up to 4.4e-6, a third of the probabilities in their last bits)."""
    from pydensecrf.utils import unary_from_labels

    img, gt = scene(0, 37, 41)
    img = img.copy()
    img[img.sum(2) < 150] = 200
    img[5:30, 5:30] = np.random.default_rng(5).integers(5, 9, (25, 25, 3))
    u = unary_from_labels(label_maps(gt, 3, 0)[0], 3, gt_prob=0.7, zero_unsure=False)
    assert np.array_equal(torch_q(img, u, GSLM), inference_q(img, u, GSLM))
    bilateral = ct.TorchDenseCRF([img], GSLM).kernels[1].lattice
    _, _, pad = ct.lattice_points([torch.zeros(37 * 41, 5)])
    assert int(pad.sum()) == 3
    pixels_only = ct.PermutohedralLattice(bilateral_features(img), None, None)
    assert pixels_only.M < bilateral.M


def bilateral_features(img: np.ndarray, p: CRFConfig = GSLM) -> torch.Tensor:
    h, w = img.shape[:2]
    crf = ct.TorchDenseCRF([img], p)
    rgb = torch.from_numpy(img.reshape(-1, 3).astype(np.float32)) / crf._scalar(p.bilateral_srgb)
    return torch.cat([crf._position(h, w, p.sxy_for(h, w)[1]), rgb], 1)


def test_unaries_equal_pydensecrf_utils():
    from pydensecrf.utils import unary_from_labels, unary_from_softmax

    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (7, 9))
    u = ct.unary_from_labels_torch(lab, 4, 0.7).numpy()
    assert np.array_equal(u.reshape(4, -1), unary_from_labels(lab, 4, gt_prob=0.7, zero_unsure=False))
    pr = rng.dirichlet(np.ones(3), (7, 9)).transpose(2, 0, 1).astype(np.float32)
    pr[0, 0, 0] = 0.0  # clipped at 1e-5
    assert np.array_equal(ct.unary_from_softmax_torch(pr).numpy().reshape(3, -1), unary_from_softmax(pr))


def test_expf_replica_matches_libm():
    """The scalar exp of Eigen's softmax is glibc's expf; the replica must give its bits."""
    name = ctypes.util.find_library("m")
    if platform.system() != "Linux" or not name or "libc" not in platform.libc_ver()[0]:
        pytest.skip("needs glibc's libm")
    libm = ctypes.CDLL(name)
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(3000) * 20, -rng.random(300) * 110, [0.0, -88.0, -103.9, -104.0]]).astype(np.float32)
    ref = np.array([libm.expf(float(v)) for v in x], np.float32)
    assert np.array_equal(ct._libm_expf(torch.from_numpy(x)).numpy().view(np.int32), ref.view(np.int32))


@pytest.mark.parametrize("c", [2, 3, 6])
def test_softmax_in_cpu_blocks_equals_whole(c):
    """On a CPU the softmax runs over pixel blocks; the blocks change nothing."""
    t = torch.randn(c, 2, ct._CPU_BLOCK + 777, generator=torch.Generator().manual_seed(c)) * 5
    assert torch.equal(ct._softmax_eigen(t), ct._softmax_block(t.reshape(c, -1)).view(t.shape))


# --------------------------------------------------------------------------
# The lattice from its definition
# --------------------------------------------------------------------------
def grid_lattice(h: int, w: int, sxy: float) -> ct.PermutohedralLattice:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return ct.PermutohedralLattice(torch.stack([xx.reshape(-1) / sxy, yy.reshape(-1) / sxy], 1))


def test_lattice_weights_and_linearity():
    lat = grid_lattice(30, 40, 3.0)
    assert torch.allclose(lat.weights.sum(0), torch.ones(lat.n_points), atol=1e-6)  # barycentric
    assert (lat.weights >= -1e-6).all()  # up to the rounding of differences of equal residuals
    ones = lat.compute(torch.ones(1, lat.n_points))
    assert torch.equal(lat.compute(torch.full((1, lat.n_points), 4.0)), 4.0 * ones)  # a constant scales the norm
    two = lat.compute(torch.stack([torch.ones(lat.n_points), torch.full((lat.n_points,), 0.5)]))
    assert torch.equal(two[0], ones[0]) and torch.equal(two[1], 0.5 * ones[0])  # channels independent


@pytest.mark.parametrize("sxy", [3.0, 5.0, 8.0])
def test_constant_image_gives_the_gaussian_mass(sxy):
    """Away from the border, filtering ones sums the kernel over the pixel grid: a Gaussian of
    std sxy pixels, mass 2 pi sxy^2 (the lattice's blur approximates it, to ~12 % here), the
    same everywhere."""
    h = w = int(12 * sxy) + 1
    lat = grid_lattice(h, w, sxy)
    ones = lat.compute(torch.ones(1, lat.n_points))[0].view(h, w)
    m = int(4 * sxy)
    inner = ones[m:h - m, m:w - m]
    assert (inner.max() - inner.min()) / inner.mean() < 0.02
    assert 0.8 < float(inner.mean()) / (2 * np.pi * sxy ** 2) < 1.0
    assert ones[0, 0] < 0.5 * inner.mean()  # a corner sees a quarter of the kernel


def test_impulse_spreads_symmetrically_and_locally():
    """K[a, b] = K[b, a] (the impulse at a seen at b equals the impulse at b seen at a), the
    response falls with distance and vanishes beyond 4 sxy."""
    h = w = 61
    sxy = 3.0
    lat = grid_lattice(h, w, sxy)

    def response(y: int, x: int) -> torch.Tensor:
        e = torch.zeros(1, h * w)
        e[0, y * w + x] = 1.0
        return lat.compute(e)[0].view(h, w)

    c = response(30, 30)
    for (y, x) in [(32, 35), (27, 31), (30, 31), (36, 24)]:
        assert abs(float(c[y, x] - response(y, x)[30, 30])) <= 1e-6 * float(c.max())
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dist = ((yy - 30) ** 2 + (xx - 30) ** 2).float().sqrt()
    rings = [float(c[(dist >= r) & (dist < r + 1)].mean()) for r in range(1, 12)]
    assert all(a > b for a, b in itertools.pairwise(rings))
    assert float(c[dist >= 4 * sxy].abs().max()) == 0.0


def test_huge_sxy_gives_the_global_mean():
    h, w = 25, 33
    lat = grid_lattice(h, w, 1e4)
    x = torch.rand(3, h * w, generator=torch.Generator().manual_seed(0))
    out = lat.compute(x) / lat.compute(torch.ones(1, h * w))
    assert torch.allclose(out, x.mean(1, keepdim=True).expand_as(out), atol=1e-4)


def test_images_do_not_share_vertices():
    """Two images in one lattice filter as each alone."""
    feats = [torch.rand(200, 5, generator=torch.Generator().manual_seed(s)) * 4 for s in (0, 1)]
    both = ct.PermutohedralLattice(*ct.lattice_points(feats))
    x = torch.rand(2, 400, generator=torch.Generator().manual_seed(2))
    y = both.compute(x)
    for i, f in enumerate(feats):
        alone = ct.PermutohedralLattice(*ct.lattice_points([f]))
        assert torch.equal(y[:, 200 * i:200 * (i + 1)], alone.compute(x[:, 200 * i:200 * (i + 1)].contiguous()))


# --------------------------------------------------------------------------
# Batches and bad input
# --------------------------------------------------------------------------
def test_batch_equals_per_image_calls():
    imgs, maps, ns = [], [], []
    for k, (hw, n, count) in enumerate([((40, 50), 3, 2), ((40, 50), 3, 1), ((37, 41), 2, 2), ((64, 48), 3, 3)]):
        img, gt = scene(10 + k, *hw)
        imgs.append(img)
        maps.append(label_maps(gt, n, k)[:count] + label_maps(gt, n, k + 7)[:max(0, count - 2)])
        ns.append(n)
    batch = ct.crf_labels_batch(imgs, maps, ns, GSLM)
    for img, m, n, got in zip(imgs, maps, ns, batch):
        assert len(got) == len(m)
        for a, b in zip(ct.crf_labels_torch(img, m, n, GSLM), got):
            assert np.array_equal(a, b)
    rng = np.random.default_rng(0)
    same = [textured(s, 40, 50) for s in range(3)]
    probs = [rng.dirichlet(np.ones(4), (40, 50)).transpose(2, 0, 1).astype(np.float32) for _ in same]
    stacked = ct.crf_probabilities_batch(np.stack(same), probs, DEEPLAB)
    for img, pr, got in zip(same, probs, stacked):
        assert np.array_equal(ct.crf_probabilities_torch(img, pr, DEEPLAB), got)


def one_line_value_error(fn, match: str):
    with pytest.raises(ValueError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_bad_input():
    img, gt = scene(0, 40, 50)
    good = [gt % 3]
    one_line_value_error(lambda: ct.crf_labels_torch(img, [gt[:30] % 3], 3, GSLM), "label map of shape")
    high, low = gt.astype(np.int64) % 3, gt.astype(np.int64) % 3
    high[0, 0], low = 3, low - 1
    one_line_value_error(lambda: ct.crf_labels_torch(img, [high], 3, GSLM), r"label values must lie in 0\.\.2")
    one_line_value_error(lambda: ct.crf_labels_torch(img, [low], 3, GSLM), r"found -1\.\.")
    one_line_value_error(lambda: ct.crf_labels_torch(img, [gt.astype(np.float32)], 3, GSLM), "integer")
    one_line_value_error(lambda: ct.crf_labels_torch(img.astype(np.float32), good, 3, GSLM), r"uint8 \[H, W, 3\]")
    one_line_value_error(lambda: ct.crf_labels_torch(img[..., :2], good, 3, GSLM), r"uint8 \[H, W, 3\]")
    one_line_value_error(lambda: ct.crf_labels_batch([img, img], [good], 3, GSLM), "2 images but 1")
    one_line_value_error(lambda: ct.crf_labels_torch(img, good, 0, GSLM), "n_labels must be >= 1")
    one_line_value_error(lambda: ct.crf_labels_torch(img, good, 3, CRFConfig(gt_prob=1.0)), "gt_prob")
    probs = np.full((3, 40, 50), 1 / 3, np.float32)
    one_line_value_error(lambda: ct.crf_probabilities_torch(img, probs[:, :20], DEEPLAB), "probabilities of shape")
    one_line_value_error(lambda: ct.crf_probabilities_torch(img, probs[0], DEEPLAB), "probabilities of shape")
    one_line_value_error(lambda: ct.crf_probabilities_batch([img, img], [probs, probs[:2]], DEEPLAB), "3 and 2 classes")


def test_one_label_and_no_label_maps():
    img, gt = scene(1, 40, 50)
    out = ct.crf_labels_torch(img, [np.zeros_like(gt)], 1, GSLM)
    assert np.array_equal(out[0], np.zeros(gt.shape, np.int64))
    assert ct.crf_labels_batch([img], [[]], 3, GSLM) == [[]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu():
    """On CUDA the splat's atomic additions have no fixed order: agreement to float rounding."""
    imgs, maps = [], []
    for k in range(3):
        img, gt = scene(20 + k, 64, 48)
        imgs.append(img)
        maps.append(label_maps(gt, 3, k))
    cpu = ct.crf_labels_batch(imgs, maps, 3, GSLM)
    gpu = ct.crf_labels_batch(imgs, maps, 3, GSLM, device="cuda")
    for a, b in zip(cpu, gpu):
        for x, y in zip(a, b):
            assert (x == y).mean() >= 0.999
    probs = np.random.default_rng(0).dirichlet(np.ones(5), (64, 48)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_allclose(ct.crf_probabilities_torch(imgs[0], probs, DEEPLAB, device="cuda"),
                               ct.crf_probabilities_torch(imgs[0], probs, DEEPLAB), rtol=0, atol=1e-5)
