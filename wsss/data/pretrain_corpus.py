"""A classification corpus for pretraining the synthetic backbone, from its own generator.

No ImageNet weights can be downloaded on an offline machine, yet the VOC recipe (frozen BN,
no momentum, a 10x head, stages 1-2 detached) only learns from a backbone that already has
features. So the project pretrains one on this corpus, which shares nothing with the
synthetic mini-VOC on purpose: other shapes (triangles, stars, crosses, rings, bars, diamonds), other
textures (dots, rings, waves, noise, blotches: no stripes or checks), one object per image
on a smooth noise background, no part/body structure, and its own seed. A class is a
(texture, hue band) pair on any shape, so a classifier needs colour and texture features:
the low- and mid-level features that transfer.

Layout (the VOC layout, so the shared classification dataset reads it)::

    <root>/JPEGImages/<id>.jpg
    <root>/ImageSets/Segmentation/{train,val}.txt
    <root>/cls_labels.json
"""
from __future__ import annotations

import colorsys
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wsss.data.labels import ImageLabels
from wsss.fileio import write_id_list, write_image

# bumped whenever the generator draws other images: part of the pretraining recipe, so
# weights pretrained on an older corpus are refused rather than silently reused
CORPUS_VERSION = 3
SHAPES = ("triangle", "star", "cross", "ring", "bar", "diamond")
TEXTURES = ("dots", "rings", "waves", "noise", "blotches")
HUE_BANDS = 4  # a class's object colours come from one of these hue bands


def corpus_classes(num_classes: int) -> list[tuple[str, int]]:
    pairs = [(t, band) for band in range(HUE_BANDS) for t in TEXTURES]
    if not 2 <= num_classes <= len(pairs):
        raise ValueError(f"the pretraining corpus has 2..{len(pairs)} classes, got {num_classes}")
    return pairs[:num_classes]


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    r = rng.uniform(0.25, 0.42) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    rot = rng.uniform(0, 2 * np.pi)

    def poly(radii, n):
        pts = []
        for i in range(n):
            a = rot + 2 * np.pi * i / n
            rr = radii[i % len(radii)]
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts

    if shape == "triangle":
        d.polygon(poly([r], 3), fill=1)
    elif shape == "star":
        d.polygon(poly([r, 0.45 * r], 10), fill=1)
    elif shape == "diamond":
        d.polygon(poly([r, 0.55 * r], 4), fill=1)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        q = 0.55 * r
        d.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    elif shape == "cross":
        a = r * 0.33
        for dx, dy in ((r, a), (a, r)):
            corners = [(-dx, -dy), (dx, -dy), (dx, dy), (-dx, dy)]
            d.polygon([(cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)) for x, y in corners],
                      fill=1)
    else:  # bar
        a, b = r, r * 0.3
        corners = [(-a, -b), (a, -b), (a, b), (-a, b)]
        d.polygon([(cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)) for x, y in corners], fill=1)
    return np.asarray(im, dtype=bool)


def _rgb(rng: np.random.Generator, band: int | None = None) -> np.ndarray:
    hue = rng.random() if band is None else (band + rng.uniform(0.1, 0.9)) / HUE_BANDS
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.4, 1.0)), np.float32)


def _texture(rng: np.random.Generator, kind: str, band: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(0.08, 0.16) * size
    if kind == "blotches":
        cells = int(rng.integers(3, 7))
        mix = np.asarray(Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                         np.float32) / 255.0
    elif kind == "dots":
        gx, gy = (xx % period) - period / 2, (yy % period) - period / 2
        mix = (gx ** 2 + gy ** 2 < (period * 0.3) ** 2).astype(np.float32)
    elif kind == "waves":
        th = rng.uniform(0, np.pi)
        mix = 0.5 + 0.5 * np.sin((xx * np.cos(th) + yy * np.sin(th)) * 2 * np.pi / period
                                 + 2.0 * np.sin(yy * 2 * np.pi / (3 * period)))
    elif kind == "rings":
        cx, cy = rng.uniform(0, size, 2)
        mix = 0.5 + 0.5 * np.sin(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * 2 * np.pi / period)
    else:  # noise
        mix = (rng.random((size, size)) > 0.5).astype(np.float32)
    # a light and a dark colour of the class's hue band: the band and the texture are the cues
    a, b = _rgb(rng, band), _rgb(rng, band) * 0.45
    return a[None, None] * (1 - mix[..., None]) + b[None, None] * mix[..., None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(2, 6))
    grid = rng.random((cells + 1, cells + 1, 3)).astype(np.float32)
    im = Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def render_corpus_image(rng: np.random.Generator, texture: str, band: int, size: int) -> np.ndarray:
    img = _background(rng, size)
    mask = _shape_mask(rng, SHAPES[int(rng.integers(len(SHAPES)))], size)
    tex = _texture(rng, texture, band, size)
    img[mask] = tex[mask]
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def generate_pretrain_corpus(root: str | os.PathLike, seed: int = 1000, image_size: int = 64, num_train: int = 4000,
                             num_val: int = 400, num_classes: int = 20) -> dict:
    """Write the corpus into a temporary folder and rename it into place (safe to rerun)."""
    root = Path(root)
    classes = corpus_classes(num_classes)
    names = [f"{t}_hue{band}" for t, band in classes]
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "JPEGImages").mkdir(parents=True)
    rng = np.random.default_rng([seed, 7919])  # a stream no synthetic mini-VOC seed produces
    labels: dict[str, list[int]] = {}
    splits = {"train": [f"p{i:06d}" for i in range(num_train)], "val": [f"q{i:06d}" for i in range(num_val)]}
    for ids in splits.values():
        for image_id in ids:
            c = int(rng.integers(num_classes))
            write_image(tmp / "JPEGImages" / f"{image_id}.jpg", render_corpus_image(rng, *classes[c], image_size), quality=92)
            labels[image_id] = [c]
    for name, ids in splits.items():
        write_id_list(tmp / "ImageSets" / "Segmentation" / f"{name}.txt", ids)
    ImageLabels(names, labels).save(tmp / "cls_labels.json")
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root)
    return {"root": str(root), "classes": names, "train": num_train, "val": num_val, "image_size": image_size}
