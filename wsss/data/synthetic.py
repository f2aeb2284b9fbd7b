"""The synthetic mini-VOC: a small dataset in the exact VOC 2012 layout, built so that
it has the condition weakly supervised segmentation methods are made for.

Each object is a large textured, shaded blob (the *body*) carrying a small square
*part* with a two-colour pattern of its class. The part alone names the class. The
body is one texture family shared by every class: a classifier can learn to see it,
but it says nothing about which class is there, so a CAM trained on image labels covers
the part and little of the body (the gap PPL and GSLM exist to close). The body's hue
never occurs in the background, and the background clutter is dull (never the parts'
saturated colours), so a good CAM does not flood into the background. Bodies are
striped and shaded so that a colour-driven CRF cannot fill them by itself.
docs/synthetic_bench.md measures this premise on every bench run. Opt-in settings draw
other scenes (:func:`render_scene`): elongated bodies with the part at one end, parts in one
hue, and decoys, objects of no class (background), without which a classifier can name the
last class it learns by elimination (an object whose part is none of the others').

Everything is deterministic from the seed. Output:

    <root>/JPEGImages/<id>.jpg, Annotations/<id>.xml
    <root>/SegmentationClass/<id>.png      train + val GT, 1-px boundary band = 255 (as VOC)
    <root>/SegmentationClassAug/<id>.png   train_aug + val GT, no boundary band (as SBD)
    <root>/PartMasks/<id>.png              train_aug + val: c+1 on the visible part of each object
    <root>/ImageSets/Segmentation/{train,train_aug,val,test}.txt
    <root>/cls_labels.json                 via prepare_voc's label builder
    <root>/coco/{train2014,val2014,annotations}  optional COCO-style copy
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsss.data.labels import COCO_CATEGORY_IDS, VOC_CLASSES
from wsss.fileio import atomic_write_json, atomic_write_text, write_id_list, write_image, write_palette_png

# Distinct, saturated part colours (RGB); class c uses pair c.
_PART_COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (255, 255, 255), (0, 0, 0), (128, 128, 128),
]
_PATTERNS = ("checker", "hstripe", "vstripe", "border", "diag")
# one_hue parts and decoys: the border becomes a ring as wide as the other patterns' bars
_ONE_HUE_PATTERNS = tuple("ring" if p == "border" else p for p in _PATTERNS)
# The premise of the bench (docs/synthetic_bench.md): the *part* alone names the class; the
# *body* is one texture family shared by every class (learnable, never class-specific) whose
# hue occurs neither in the background nor in any part; the clutter is dull (saturation <= 0.3),
# so it carries neither the parts' saturated colours nor the bodies' hue.
BODY_HUE = 0.08  # brown-orange
CLUTTER_HUE_GAP = 0.15  # clutter hues keep at least this distance (on the hue circle) from BODY_HUE
PART_FRACTION = 0.14  # a part's side, as a fraction of the image's shorter side
PART_HUE_GAP = 0.17  # one_hue part colours keep at least this distance from BODY_HUE
MAX_PART_HUES = 8  # one_hue: hues spread over the circle; past this many classes they repeat with another pattern
SCENES = ("round", "elongated")
PIXEL_NOISE = 0.03  # the standard deviation of the Gaussian pixel noise, in [0, 1] units
PART_COLOURS = ("pairs", "one_hue")


@dataclass
class ClassStyle:
    part_a: tuple[int, int, int]
    part_b: tuple[int, int, int]
    pattern: str


@dataclass
class Instance:
    cls: int
    polygon: list[tuple[float, float]]
    part_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    crowd: bool = False
    mask: np.ndarray | None = field(default=None, repr=False)


def _part_palette() -> list[tuple[int, int, int]]:
    """The part colours: saturated, and far in hue from the body family, so that no part
    looks like a body (measured: with orange and red parts, those classes' CAMs fired on
    every body, precision 22-39% against recall 48-66%)."""
    out = []
    for rgb in _PART_COLOURS:
        h, s, _ = colorsys.rgb_to_hsv(*(v / 255.0 for v in rgb))
        d = abs(h - BODY_HUE)
        if s >= 0.45 and min(d, 1 - d) >= 0.15:
            out.append(rgb)
    return out


def _rgb8(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(x * 255)) for x in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _one_hue_styles(num_classes: int) -> list[ClassStyle]:
    """Class c: one saturated hue in a light and a dark shade, in a pattern of its own.

    The two shades share the hue, so a part stays a saturated colour when the network sees it
    blurred (a green + purple checker averages to a dull blue-grey, the clutter's look). The
    hues are spread evenly over the circle outside the body's band; the border pattern is a
    ring as wide as the other patterns' bars, so that it survives a stride-16 network."""
    k = min(max(num_classes, 1), MAX_PART_HUES)
    if num_classes > k * len(_PATTERNS):
        raise ValueError(f"synthetic data with one-hue parts supports at most {MAX_PART_HUES * len(_PATTERNS)} classes")
    lo, span = BODY_HUE + PART_HUE_GAP, 1.0 - 2 * PART_HUE_GAP
    hues = [lo + span * i / max(k - 1, 1) for i in range(k)]
    patterns = _ONE_HUE_PATTERNS
    return [ClassStyle(_rgb8(hues[c % k], 0.85, 0.95), _rgb8(hues[c % k], 0.9, 0.45), patterns[(c + c // k) % len(patterns)])
            for c in range(num_classes)]


def class_styles(num_classes: int, colours: str = "pairs") -> list[ClassStyle]:
    """Class c: a pair of part colours and a pattern of its own (pairs repeat with other
    patterns past the palette's size); ``colours="one_hue"``: see :func:`_one_hue_styles`."""
    if colours not in PART_COLOURS:
        raise ValueError(f"part colours must be one of {PART_COLOURS}, not {colours!r}")
    if colours == "one_hue":
        return _one_hue_styles(num_classes)
    palette = _part_palette()
    n = len(palette)
    if num_classes > n * (n - 1):
        raise ValueError(f"synthetic data supports at most {n * (n - 1)} classes")
    styles = []
    for c in range(num_classes):
        a = palette[c % n]
        b = palette[(c + 2 + c // n) % n]
        if b == a:
            b = palette[(c + 1) % n]
        styles.append(ClassStyle(a, b, _PATTERNS[c % len(_PATTERNS)]))
    return styles


# --------------------------------------------------------------------------
# texture fields
# --------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32) / 255.0


def _hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1)), dtype=np.float32)


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 24,
                  aspect_range: tuple[float, float] = (0.65, 1.0), rot: float | None = None) -> list[tuple[float, float]]:
    """A wobbly ellipse: semi-axes r (along ``rot``) and r * aspect."""
    aspect = rng.uniform(*aspect_range)
    rot = rng.uniform(0, np.pi) if rot is None else rot
    k1, k2 = rng.normal(0, 0.08, 2)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    pts = []
    for i in range(n):
        t = 2 * np.pi * i / n
        rr = r * (1 + k1 * np.sin(2 * t + p1) + k2 * np.sin(3 * t + p2))
        x, y = rr * np.cos(t), rr * aspect * np.sin(t)
        pts.append((cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)))
    return pts


def _poly_mask(poly, h: int, w: int) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in poly], fill=1)
    return np.asarray(im, dtype=bool)


def _part_pattern(style: ClassStyle, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    if style.pattern == "checker":
        q = max(size // 4, 1)
        sel = ((yy // q) + (xx // q)) % 2 == 0
    elif style.pattern == "hstripe":
        sel = (yy // max(size // 4, 1)) % 2 == 0
    elif style.pattern == "vstripe":
        sel = (xx // max(size // 4, 1)) % 2 == 0
    elif style.pattern in ("border", "ring"):
        b = 2 if style.pattern == "border" else max(size // 4, 1)
        sel = (yy < b) | (xx < b) | (yy >= size - b) | (xx >= size - b)
    else:
        sel = ((yy + xx) // max(size // 3, 1)) % 2 == 0
    out = np.where(sel[..., None], np.asarray(style.part_a, np.float32), np.asarray(style.part_b, np.float32))
    return out / 255.0


# The graded bench's body families (data.synthetic.shared_body < 1, docs/synthetic_bench.md):
# class c's bodies may carry a motif of their own instead of the shared stripes. Every motif is
# drawn from the same random numbers as the shared stripes (colours, orientation, phase,
# period, noise, shading), so a scene draws the same objects, parts and colours at every
# level: the levels differ in the bodies' motif alone.
BODY_MOTIFS = ("checks", "dots", "rings", "waves", "lattice")
SHARED_BODY = "stripes"  # the shared family: every body of the published scenes, and every decoy's


def body_family(cls: int, num_classes: int) -> str:
    """Class ``cls``'s own body family: a motif, past len(BODY_MOTIFS) classes at a coarser period."""
    if num_classes > 2 * len(BODY_MOTIFS):
        raise ValueError(f"body families (data.synthetic.shared_body < 1) support at most {2 * len(BODY_MOTIFS)} classes")
    return BODY_MOTIFS[cls % len(BODY_MOTIFS)] + ("" if cls < len(BODY_MOTIFS) else "_coarse")


def _motif(family: str, yy: np.ndarray, xx: np.ndarray, theta: float, phase: float, period: float) -> np.ndarray:
    """A [0, 1] pattern of ``family`` at the body's orientation, phase and period."""
    if family.endswith("_coarse"):
        family, period = family.removesuffix("_coarse"), period * 1.6
    u = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period + phase
    if family == SHARED_BODY:
        return 0.5 + 0.5 * np.sin(u)
    v = (-xx * np.sin(theta) + yy * np.cos(theta)) * 2 * np.pi / period + 1.7 * phase
    if family == "checks":
        return 0.5 + 0.5 * np.tanh(3.0 * np.sin(u) * np.sin(v))
    if family == "dots":  # round spots on a lattice
        return ((1 + np.cos(u)) * (1 + np.cos(v)) / 4 > 0.45).astype(np.float32)
    if family == "rings":  # concentric rings about a centre set by the phase and orientation
        h, w = yy.shape
        cy, cx = h * theta / np.pi, w * phase / (2 * np.pi)
        return 0.5 + 0.5 * np.sin(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * 2 * np.pi / period + phase)
    if family == "waves":  # stripes bent by a slow sine across them
        return 0.5 + 0.5 * np.sin(u + 2.0 * np.sin(v / 3.0))
    if family == "lattice":  # thin lines along both axes
        return (np.maximum(np.abs(np.sin(u / 2)), np.abs(np.sin(v / 2))) > 0.92).astype(np.float32)
    raise ValueError(f"unknown body family {family!r}")


def _body_texture(rng: np.random.Generator, h: int, w: int, yy: np.ndarray, xx: np.ndarray, size: int,
                  family: str = SHARED_BODY) -> np.ndarray:
    """A body: a shaded, patterned, noisy field around BODY_HUE. ``family``: the shared stripes
    (every body of the published scenes) or a class's motif (:func:`body_family`), drawn from
    the same random numbers."""
    base = _hsv_rgb(BODY_HUE + rng.normal(0, 0.015), rng.uniform(0.5, 0.8), rng.uniform(0.55, 0.85))
    other = _hsv_rgb(BODY_HUE + rng.normal(0, 0.015), rng.uniform(0.35, 0.6), rng.uniform(0.3, 0.5))
    theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    period = size * rng.uniform(0.05, 0.09)  # stripes in image-relative units: the same look at any size
    pattern = _motif(family, yy, xx, theta, phase, period)
    mix = 0.6 * pattern + 0.4 * _smooth_noise(rng, h, w, int(rng.integers(3, 7)))
    tex = base[None, None] * (1 - mix[..., None]) + other[None, None] * mix[..., None]
    a = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + rng.uniform(0.1, 0.3) * ((xx / w - 0.5) * np.cos(a) + (yy / h - 0.5) * np.sin(a)) * 2
    return tex * shade[..., None]


def _clutter_hue(rng: np.random.Generator) -> float:
    while True:
        hue = float(rng.random())
        d = abs(hue - BODY_HUE)
        if min(d, 1 - d) >= CLUTTER_HUE_GAP:
            return hue


def _clutter_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Background and clutter: two dull colours (never the body's hue) mixed by smooth noise, sometimes speckled."""
    a = _hsv_rgb(_clutter_hue(rng), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.9))
    b = _hsv_rgb(_clutter_hue(rng), rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.9))
    mix = _smooth_noise(rng, h, w, int(rng.integers(4, 12)))
    if rng.random() < 0.5:
        mix = np.clip(0.6 * mix + (rng.random((h, w)) < 0.05), 0, 1)
    return a[None, None] * (1 - mix[..., None]) + b[None, None] * mix[..., None]


def _place_object(rng: np.random.Generator, scene: str, size: int, h: int, w: int):
    """An object's body polygon, its mask and its part box (x0, y0, x1, y1), or None when the
    draw does not fit (too small a body, or no place for the part inside it)."""
    # bodies span several cells of a stride-16 CAM, so a part's blob cannot cover them
    if scene == "elongated":
        r, rot = rng.uniform(0.34, 0.46) * size, rng.uniform(0, np.pi)
        cx, cy = rng.uniform(r * 0.6, w - r * 0.6), rng.uniform(r * 0.6, h - r * 0.6)
        poly = _blob_polygon(rng, cx, cy, r, aspect_range=(0.4, 0.55), rot=rot)
    else:
        r = rng.uniform(0.24, 0.36) * size
        cx, cy = rng.uniform(r * 0.8, w - r * 0.8), rng.uniform(r * 0.8, h - r * 0.8)
        poly = _blob_polygon(rng, cx, cy, r)
    body = _poly_mask(poly, h, w)
    if body.sum() < 50:
        return None
    part = max(6, int(round(size * PART_FRACTION)))
    # the part sits fully inside the body, away from its edge
    ys, xs = np.nonzero(body)
    for _p in range(30):
        if scene == "elongated":  # 50-70% of the half-length from the centre, moving inwards on retries
            d = rng.uniform(0.5, 0.7) * r * (1 if rng.random() < 0.5 else -1) * (1 - _p / 30)
            x0 = int(round(cx + d * np.cos(rot))) - part // 2
            y0 = int(round(cy + d * np.sin(rot))) - part // 2
        else:
            j = int(rng.integers(len(ys)))
            x0, y0 = int(xs[j]) - part // 2, int(ys[j]) - part // 2
        if x0 < 0 or y0 < 0 or x0 + part > w or y0 + part > h:
            continue
        if body[max(y0 - 2, 0):y0 + part + 2, max(x0 - 2, 0):x0 + part + 2].all():
            return poly, body, (x0, y0, x0 + part, y0 + part)
    return None


def decoy_style(rng: np.random.Generator, styles: list[ClassStyle]) -> ClassStyle:
    """A decoy's part: a saturated hue half-way between two neighbouring class hues (one_hue
    parts; jittered by up to 0.02) in the light and dark shades and any pattern. It names no
    class, so an object whose part the network does not know is no evidence for any class."""
    hues = sorted({round(colorsys.rgb_to_hsv(*(v / 255.0 for v in st.part_a))[0], 4) for st in styles})
    if len(hues) < 2:
        raise ValueError("decoys need at least two part hues (part_colours one_hue, two or more classes)")
    i = int(rng.integers(len(hues) - 1))
    hue = (hues[i] + hues[i + 1]) / 2 + rng.uniform(-0.02, 0.02)
    return ClassStyle(_rgb8(hue, 0.85, 0.95), _rgb8(hue, 0.9, 0.45), _ONE_HUE_PATTERNS[int(rng.integers(len(_ONE_HUE_PATTERNS)))])


@dataclass
class Scene:
    img: np.ndarray  # uint8 HWC
    label: np.ndarray  # 0 background, c+1 class c
    parts: np.ndarray  # c+1 where an object's part is visible, else 0
    instances: list[Instance]
    decoys: np.ndarray  # visible decoy pixels: 1 body, 2 part, else 0 (background in the GT)
    families: list[str]  # the body family each instance was drawn with (SHARED_BODY or a class motif)


def render_scene(rng: np.random.Generator, size: int, styles: list[ClassStyle], max_tries: int = 20,
                 hw: tuple[int, int] | None = None, scene: str = "round", decoys: int = 0, shared_body: float = 1.0,
                 family_rng: np.random.Generator | None = None, pixel_noise: float = PIXEL_NOISE, supersample: int = 1):
    """One image (uint8 HWC), its label mask (0 = bg, c+1), its part mask (c+1 where an
    object's part is visible, else 0) and the instances (:func:`draw_scene` adds the decoys'
    mask and the body families).

    ``hw``: a non-square (height, width); object sizes then follow the shorter side.
    ``scene``: "round" bodies (radius 24-36% of the shorter side) with the part anywhere
    inside, or "elongated" ones (half-length 34-46%, width 40-55% of the length) with the part
    near one end of the long axis, as a head: the part's blob in a coarse CAM then leaves the
    far end of the body uncovered.
    ``decoys``: up to this many objects of no class (0 to ``decoys`` per image, drawn under the
    class objects, labelled background): a body with a part in a hue no class has
    (:func:`decoy_style`).
    ``shared_body``: the probability that a class object's body is of the shared family (the
    striped one every body of the published scenes has, and every decoy's) rather than its
    class's own (:func:`body_family`); 1 draws exactly the scenes drawn before the families
    existed. The choice comes from ``family_rng`` (required below 1), a stream of its own, so
    every level draws the same objects and differs in the bodies' motifs alone."""
    s = draw_scene(rng, size, styles, max_tries, hw, scene, decoys, shared_body, family_rng, pixel_noise, supersample)
    return s.img, s.label, s.parts, s.instances


def draw_scene(rng: np.random.Generator, size: int, styles: list[ClassStyle], max_tries: int = 20,
               hw: tuple[int, int] | None = None, scene: str = "round", decoys: int = 0, shared_body: float = 1.0,
               family_rng: np.random.Generator | None = None, pixel_noise: float = PIXEL_NOISE, supersample: int = 1) -> Scene:
    """:func:`render_scene`'s scene with the decoys' visible pixels and the body families.

    ``supersample`` N > 1: the scene drawn at N times the size and box-filtered down (labels,
    parts and decoys: each N x N block's centre pixel), as an image N times larger looks
    when shrunk: pixel noise falls N-fold, edges and stripes are anti-aliased. The graded
    bench's CRF rule (docs/synthetic_bench.md): its 128 px images look like VOC-sized renders
    seen at 128 px, so that the CRF's kernels, scaled with the image, act as they do on VOC-sized
    images. Other draws than N = 1 (the noise has N^2 times the pixels)."""
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, not {supersample}")
    if supersample > 1:
        n = supersample
        h, w = hw if hw is not None else (size, size)
        hi = draw_scene(rng, size * n, styles, max_tries, (h * n, w * n), scene, decoys, shared_body, family_rng, pixel_noise)
        img = hi.img.astype(np.float32).reshape(h, n, w, n, 3).mean((1, 3)).round().astype(np.uint8)
        pick = (slice(n // 2, None, n), slice(n // 2, None, n))
        instances = [Instance(i.cls, [(x / n, y / n) for x, y in i.polygon],
                              (i.part_box[0] // n, i.part_box[1] // n, -(-i.part_box[2] // n), -(-i.part_box[3] // n)),
                              i.crowd, i.mask[pick]) for i in hi.instances]
        return Scene(img, hi.label[pick], hi.parts[pick], instances, hi.decoys[pick], hi.families)
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, not {scene!r}")
    if not 0.0 <= shared_body <= 1.0:
        raise ValueError(f"shared_body must be in [0, 1], not {shared_body}")
    if shared_body < 1.0 and family_rng is None:
        raise ValueError("shared_body below 1 needs a family_rng (the body families' own stream)")
    h, w = hw if hw is not None else (size, size)
    size = min(h, w)
    k = len(styles)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(max_tries):
        img = _clutter_texture(rng, h, w)
        for _c in range(int(rng.integers(6, 12))):
            tex = _clutter_texture(rng, h, w)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.05, 0.2) * size
            if rng.random() < 0.5:
                poly = _blob_polygon(rng, cx, cy, r)
            else:
                a, b = r, r * rng.uniform(0.4, 1.0)
                poly = [(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx - a, cy + b)]
            m = _poly_mask(poly, h, w)
            img[m] = tex[m]

        n_obj = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        instances = []
        for _o in range(n_obj):
            c = int(rng.integers(k))
            placed = _place_object(rng, scene, size, h, w)
            if placed is not None:
                instances.append(Instance(c, placed[0], placed[2], mask=placed[1]))
        if not instances:
            continue
        # largest first, so smaller objects lie on top (the COCO overlap rule of prepare_coco)
        instances.sort(key=lambda inst: -int(inst.mask.sum()))
        decoy_objects = []
        for _d in range(int(rng.integers(decoys + 1)) if decoys else 0):
            placed = _place_object(rng, scene, size, h, w)
            if placed is not None:
                decoy_objects.append((placed[1], placed[2], decoy_style(rng, styles)))
        decoy_map = np.zeros((h, w), np.uint8)
        for body, (x0, y0, x1, y1), style in decoy_objects:  # under the class objects, background in the GT
            tex = _body_texture(rng, h, w, yy, xx, size)  # decoys keep the shared family at every level
            img[body] = tex[body]
            img[y0:y1, x0:x1] = _part_pattern(style, x1 - x0)
            decoy_map[body] = 1
            decoy_map[y0:y1, x0:x1] = 2
        label = np.zeros((h, w), np.uint8)
        owner = np.full((h, w), -1, np.int32)
        families = []
        for i, inst in enumerate(instances):
            # at 1 no draw is made: the scenes of before, bit for bit
            own = shared_body < 1.0 and family_rng.random() >= shared_body
            families.append(body_family(inst.cls, k) if own else SHARED_BODY)
            tex = _body_texture(rng, h, w, yy, xx, size, families[-1])
            img[inst.mask] = tex[inst.mask]
            label[inst.mask] = inst.cls + 1
            owner[inst.mask] = i
        decoy_map[label > 0] = 0
        # every object's part must stay visible, or the image label would lie
        if not all((owner[i.part_box[1]:i.part_box[3], i.part_box[0]:i.part_box[2]] == n).mean() > 0.8
                   for n, i in enumerate(instances)):
            continue
        parts = np.zeros((h, w), np.uint8)
        for n, inst in enumerate(instances):
            x0, y0, x1, y1 = inst.part_box
            mine = owner[y0:y1, x0:x1] == n
            img[y0:y1, x0:x1][mine] = _part_pattern(styles[inst.cls], x1 - x0)[mine]
            parts[y0:y1, x0:x1][mine] = inst.cls + 1
        # the same draws at any pixel_noise (scaled): the scene does not change with it
        img = img + rng.normal(0, pixel_noise, img.shape).astype(np.float32)
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
        return Scene(img, label, parts, instances, decoy_map, families)
    raise RuntimeError("could not place objects; image size too small?")


def boundary_band(label: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another label (VOC's 'void' outline, 1 px here)."""
    band = np.zeros(label.shape, bool)
    band[1:, :] |= label[1:, :] != label[:-1, :]
    band[:-1, :] |= label[:-1, :] != label[1:, :]
    band[:, 1:] |= label[:, 1:] != label[:, :-1]
    band[:, :-1] |= label[:, :-1] != label[:, 1:]
    return band


def _annotation_xml(image_id: str, hw: tuple[int, int], instances: list[Instance], classes: list[str]) -> str:
    objs = []
    for inst in instances:
        ys, xs = np.nonzero(inst.mask)
        objs.append(
            "  <object>\n"
            f"    <name>{classes[inst.cls]}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
            "    <difficult>0</difficult>\n"
            f"    <bndbox><xmin>{xs.min() + 1}</xmin><ymin>{ys.min() + 1}</ymin><xmax>{xs.max() + 1}</xmax><ymax>{ys.max() + 1}</ymax></bndbox>\n"
            "  </object>\n"
        )
    return (
        "<annotation>\n  <folder>VOC2012</folder>\n"
        f"  <filename>{image_id}.jpg</filename>\n"
        "  <source><database>wsss synthetic mini-VOC</database></source>\n"
        f"  <size><width>{hw[1]}</width><height>{hw[0]}</height><depth>3</depth></size>\n"
        "  <segmented>1</segmented>\n" + "".join(objs) + "</annotation>\n"
    )


def _rle_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE: run lengths of the column-major flattened mask, starting with 0s."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    counts = []
    cur, run = 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return counts


def _write_coco(root: Path, splits: dict[str, list[str]], records: dict[str, list[Instance]],
                classes: list[str], crowd_rng: np.random.Generator) -> None:
    coco = root / "coco"
    for split_name, coco_name in (("train_aug", "train2014"), ("val", "val2014")):
        img_dir = coco / coco_name
        img_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for n, image_id in enumerate(splits[split_name]):
            file_name = f"COCO_{coco_name}_{n + 1:012d}.jpg"
            src = root / "JPEGImages" / f"{image_id}.jpg"
            dst = img_dir / file_name
            if not dst.exists():
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
            h, w = records[image_id][0].mask.shape  # every image has an object
            images.append({"id": n + 1, "file_name": file_name, "height": h, "width": w})
            for inst in records[image_id]:
                ys, xs = np.nonzero(inst.mask)
                bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
                crowd = bool(crowd_rng.random() < 0.1)
                if crowd:
                    seg = {"counts": _rle_counts(inst.mask), "size": [h, w]}
                else:
                    seg = [[round(float(v), 2) for pt in inst.polygon for v in pt]]
                anns.append({"id": len(anns) + 1, "image_id": n + 1, "category_id": COCO_CATEGORY_IDS[inst.cls],
                             "segmentation": seg, "area": float(inst.mask.sum()), "bbox": bbox, "iscrowd": int(crowd)})
        cats = [{"id": COCO_CATEGORY_IDS[c], "name": classes[c], "supercategory": "synthetic"} for c in range(len(classes))]
        doc = {"info": {"description": "wsss synthetic mini-VOC, COCO-style"}, "images": images,
               "annotations": anns, "categories": cats}
        atomic_write_text(coco / "annotations" / f"instances_{coco_name}.json", json.dumps(doc))


def image_sizes(n: int, seed: int, image_size: int, width_range=None, height_range=None,
                voc_sizes: bool = False) -> list[tuple[int, int]]:
    """(height, width) of ``n`` images: ``image_size`` square by default; ``width_range`` /
    ``height_range`` [lo, hi] (inclusive) draw each side; ``voc_sizes`` draws roughly VOC 2012's
    mix: long side 500; 500x375 (w x h) in 40%, 375x500 12%, 500x333 12%, 333x500 5%, else a
    short side in 300..499 (landscape 70%). Repeated sizes matter: equal-sized images batch.
    The sizes come from a stream of their own, so the square default draws the scenes it always did."""
    if not (width_range or height_range or voc_sizes):
        return [(image_size, image_size)] * n
    rng = np.random.default_rng([seed, 0x512E5])
    common = [(375, 500), (500, 375), (333, 500), (500, 333)]
    out = []
    for _ in range(n):
        if voc_sizes:
            k = int(rng.choice(5, p=[0.40, 0.12, 0.12, 0.05, 0.31]))
            short = int(rng.integers(300, 500))
            out.append(common[k] if k < 4 else (short, 500) if rng.random() < 0.7 else (500, short))
        else:
            h = int(rng.integers(height_range[0], height_range[1] + 1)) if height_range else image_size
            w = int(rng.integers(width_range[0], width_range[1] + 1)) if width_range else image_size
            out.append((h, w))
    return out


def generate_synthetic_voc(root: str | os.PathLike, seed: int = 0, image_size: int = 128, num_train: int = 100,
                           num_aug: int = 700, num_val: int = 100, num_test: int = 20, num_classes: int = 5,
                           classes: list[str] | None = None, write_coco: bool = False, verbose: bool = False,
                           width_range=None, height_range=None, voc_sizes: bool = False, scene: str = "round",
                           part_colours: str = "pairs", decoys: int = 0, shared_body: float = 1.0, supersample: int = 1) -> dict:
    """Write the synthetic mini-VOC under ``root`` (the VOC2012-style folder); return a summary.

    Images are ``image_size`` squares unless ``width_range``/``height_range`` or ``voc_sizes``
    ask for non-square ones (see :func:`image_sizes`). ``scene``, ``decoys``, ``shared_body`` and
    ``part_colours``: see :func:`render_scene` and :func:`class_styles` (the defaults draw the
    images they always did). With decoys, ``DecoyMasks/<id>.png`` (train_aug and val) marks
    their visible bodies (1) and parts (2), background in the ground truth."""
    from wsss.data.voc import prepare_voc

    t0 = time.time()
    root = Path(root)
    if classes is None:
        if num_classes <= len(VOC_CLASSES):
            classes = VOC_CLASSES[:num_classes]
        else:
            classes = [f"class{i:02d}" for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError("len(classes) must equal num_classes")
    styles = class_styles(num_classes, part_colours)
    if decoys < 0:
        raise ValueError(f"decoys must be >= 0, not {decoys}")
    if decoys and part_colours != "one_hue":
        raise ValueError("decoys need part_colours one_hue (their parts take the hues between the classes')")
    if not 0.0 <= shared_body <= 1.0:
        raise ValueError(f"shared_body must be in [0, 1], not {shared_body}")
    rng = np.random.default_rng(seed)
    # the body families' own stream: every shared_body level draws the same scenes from rng
    family_rng = np.random.default_rng([seed, 0xB0D1]) if shared_body < 1.0 else None
    # ids look like VOC's (year_number); each split gets its own year
    splits = {
        "train": [f"2007_{i:06d}" for i in range(num_train)],
        "aug": [f"2008_{i:06d}" for i in range(num_aug)],
        "val": [f"2009_{i:06d}" for i in range(num_val)],
        "test": [f"2010_{i:06d}" for i in range(num_test)],
    }
    for d in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationClassAug", "PartMasks", "ImageSets/Segmentation",
              *(["DecoyMasks"] if decoys else [])):
        (root / d).mkdir(parents=True, exist_ok=True)
    records: dict[str, list[Instance]] = {}
    pixel_counts = np.zeros(num_classes + 1, np.int64)
    own_bodies = shared_bodies = 0
    sizes = iter(image_sizes(sum(len(v) for v in splits.values()), seed, image_size, width_range, height_range, voc_sizes))
    for split, ids in splits.items():
        for image_id in ids:
            hw = next(sizes)
            sc = draw_scene(rng, image_size, styles, hw=hw, scene=scene, decoys=decoys, shared_body=shared_body,
                            family_rng=family_rng, supersample=supersample)
            img, label, parts, instances = sc.img, sc.label, sc.parts, sc.instances
            own_bodies += sum(f != SHARED_BODY for f in sc.families)
            shared_bodies += sum(f == SHARED_BODY for f in sc.families)
            records[image_id] = instances
            write_image(root / "JPEGImages" / f"{image_id}.jpg", img, quality=92)
            atomic_write_text(root / "Annotations" / f"{image_id}.xml", _annotation_xml(image_id, hw, instances, classes))
            pixel_counts += np.bincount(label.ravel(), minlength=num_classes + 1)
            if split in ("train", "val"):
                voc_gt = label.copy()
                voc_gt[boundary_band(label)] = 255
                write_palette_png(root / "SegmentationClass" / f"{image_id}.png", voc_gt)
            if split != "test":
                write_palette_png(root / "SegmentationClassAug" / f"{image_id}.png", label)
                write_palette_png(root / "PartMasks" / f"{image_id}.png", parts)
                if decoys:
                    write_palette_png(root / "DecoyMasks" / f"{image_id}.png", sc.decoys)
    lists = {
        "train": splits["train"],
        "val": splits["val"],
        "test": splits["test"],
        "train_aug": sorted(splits["train"] + splits["aug"]),
    }
    for name, ids in lists.items():
        write_id_list(root / "ImageSets" / "Segmentation" / f"{name}.txt", ids)
    # the same label builder a VOC user runs (it also rebuilds train_aug from SegmentationClassAug - val)
    report = prepare_voc(root, classes=classes, strict_standard=False)
    atomic_write_json(root / RECORD, _settings(seed, image_size, num_train, num_aug, num_val, num_test, num_classes, write_coco,
                                               width_range, height_range, voc_sizes, scene, part_colours, decoys,
                                               shared_body, supersample))
    assert report["counts"]["train_aug"] == len(lists["train_aug"]), report["counts"]
    if write_coco:
        _write_coco(root, {"train_aug": lists["train_aug"], "val": lists["val"]}, records, classes,
                    np.random.default_rng(seed + 1))
    fg = pixel_counts[1:].sum() / pixel_counts.sum()
    summary = {
        "root": str(root),
        "classes": classes,
        "image_size": image_size if not (width_range or height_range or voc_sizes) else "varied",
        "counts": {k: len(v) for k, v in lists.items()},
        "foreground_fraction": round(float(fg), 4),
        "objects_per_image": round(float(np.mean([len(v) for v in records.values()])), 3),
        "bodies_of_their_class_family": round(own_bodies / max(own_bodies + shared_bodies, 1), 4),
        "coco": str(root / "coco") if write_coco else None,
        "seconds": round(time.time() - t0, 2),
    }
    if verbose:
        print(json.dumps(summary, indent=2))
    return summary


def ensure_data(cfg) -> None:
    """Generate the synthetic mini-VOC when a synthetic config needs it; fail early when data.root is missing."""
    ensure_synthetic(cfg)
    if not Path(cfg.data.root).is_dir():
        from wsss.fileio import DataError

        raise DataError(f"{cfg.data.root}: data root does not exist (data.root)")


GENERATOR_VERSION = 5  # bumped whenever the same settings draw other images (2-4: the premise scenes)
RECORD = "synthetic.json"  # in the data root: the settings and generator version it was made with


def _settings(seed, image_size, num_train, num_aug, num_val, num_test, num_classes, write_coco, width_range=None,
              height_range=None, voc_sizes=False, scene="round", part_colours="pairs", decoys=0, shared_body=1.0,
              supersample=1) -> dict:
    return {"version": GENERATOR_VERSION, "seed": seed, "image_size": image_size, "num_train": num_train,
            "num_aug": num_aug, "num_val": num_val, "num_test": num_test, "num_classes": num_classes,
            "write_coco": bool(write_coco), "width_range": list(width_range) if width_range else None,
            "height_range": list(height_range) if height_range else None, "voc_sizes": bool(voc_sizes),
            "scene": scene, "part_colours": part_colours, "decoys": int(decoys), "shared_body": float(shared_body),
            "supersample": int(supersample)}


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def ensure_synthetic(cfg) -> bool:
    """Generate the configured synthetic mini-VOC when its data.root does not exist yet.

    Returns True when it generated. A finished root made with other data.synthetic settings
    (or by an older generator) is an error naming them, never silently reused. Safe under
    torchrun: rank 0 generates into a temporary folder that is renamed into place, the
    others wait for it.
    """
    if cfg.data.dataset != "synthetic":
        return False
    from wsss.fileio import DataError, read_json

    root = Path(cfg.data.root)
    s = cfg.data.synthetic
    if not 0.0 <= s.shared_body <= 1.0:
        from wsss.errors import ConfigError

        raise ConfigError(f"data.synthetic.shared_body: a probability in [0, 1], got {s.shared_body}")
    if s.supersample < 1:
        from wsss.errors import ConfigError

        raise ConfigError(f"data.synthetic.supersample: a whole factor >= 1, got {s.supersample}")
    want = _settings(s.seed, s.image_size, s.num_train, s.num_aug, s.num_val, s.num_test, s.num_classes, s.write_coco,
                     s.width_range, s.height_range, s.voc_sizes, s.scene, s.part_colours, s.decoys, s.shared_body,
                     s.supersample)
    if (root / "cls_labels.json").is_file():
        have = read_json(root / RECORD) if (root / RECORD).is_file() else {}
        if have != want:
            changed = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            raise DataError(f"{root}: made with other data.synthetic settings or an older generator "
                            f"({', '.join(changed)}); remove it to regenerate, or point data.root elsewhere")
        return False
    generated = False
    if _rank() == 0 and not (root / "cls_labels.json").is_file():
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(f"{root}: exists but holds no cls_labels.json; not a finished synthetic dataset (remove it)")
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        print(f"generating the synthetic mini-VOC in {root} ...", flush=True)
        generate_synthetic_voc(tmp, seed=s.seed, image_size=s.image_size, num_train=s.num_train, num_aug=s.num_aug,
                               num_val=s.num_val, num_test=s.num_test, num_classes=s.num_classes, write_coco=s.write_coco,
                               width_range=s.width_range, height_range=s.height_range, voc_sizes=s.voc_sizes,
                               scene=s.scene, part_colours=s.part_colours, decoys=s.decoys, shared_body=s.shared_body,
                               supersample=s.supersample)
        if root.exists():
            root.rmdir()
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, root)
        generated = True
    _barrier()
    return generated
