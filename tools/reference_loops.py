"""The reference implementations' procedures written as plain loops, for side-by-side timing.

Each function does what GSLM's step script (IRN's, where GSLM kept it) does, written here
from their definitions with none of our batching, caching or data path: the per-image
pipeline, the tensor shapes, the DataLoader settings and the worker processes are theirs.
scripts/benchmark_reference.py --reference-code runs the official code beside them and
publishes how long each loop takes against it (the calibration). They use our
CAM network (the same layers as theirs) and our CRF parameters, so our stages and
these loops compute the same numbers (checked in tests/test_reference_loops.py)
and the benchmark's ratios measure only how the work is organised.
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from wsss.fileio import voc_palette

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _normalize(img: np.ndarray) -> np.ndarray:
    """Their Normalize: per channel in float64 (``img / 255.``), stored as float32, HWC."""
    out = np.empty_like(img, np.float32)
    for c in range(3):
        out[..., c] = (img[..., c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out


def _pil_rescale(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    size = (int(np.round(h * scale)), int(np.round(w * scale)))
    return np.asarray(Image.fromarray(img).resize(size[::-1], Image.BICUBIC))


# --------------------------------------------------------------------------
# make_cam
# --------------------------------------------------------------------------
class CamDataset(Dataset):
    """Their multi-scale inference dataset: per scale, [image, its flip] as one float32 array."""

    def __init__(self, root, ids: list[str], multi_hot: dict[str, np.ndarray], scales):
        self.root, self.ids, self.multi_hot, self.scales = Path(root), list(ids), multi_hot, list(scales)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        name = self.ids[i]
        img = _read_rgb(self.root / "JPEGImages" / f"{name}.jpg")
        ms = []
        for s in self.scales:
            s_img = img if s == 1.0 else _pil_rescale(img, s)
            s_img = _normalize(s_img).transpose(2, 0, 1)
            ms.append(np.stack([s_img, np.flip(s_img, -1)], axis=0))
        return {"name": name, "img": ms, "size": (img.shape[0], img.shape[1]),
                "label": torch.from_numpy(self.multi_hot[name])}


def _mixin(cams: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Their Extractor.mixin_multi_cams: every map (all classes) upsampled, stacked, summed,
    each class divided by its maximum + 1e-5."""
    cams = [F.interpolate(c, size, mode="bilinear", align_corners=False) for c in cams]
    out = torch.sum(torch.stack(cams, 0), 0)
    out /= F.adaptive_max_pool2d(out, (1, 1)) + 1e-5
    return out


def make_cam(model: torch.nn.Module, root, ids: list[str], multi_hot: dict[str, np.ndarray], out_dir,
             scales=(1.0, 0.5, 1.5, 2.0), workers: int = 0, strided_stride: int = 4) -> None:
    """GSLM's step/make_cam.py on the CPU (its one-process run): one image at a time, every
    scale's [image, flip] pair through the network, the ReLU'd maps of the image and of the
    flipped-back flip kept apart, all of them (every class) upsampled to the strided and to
    the full size and mixed (summed, normalised by the maximum), the image's classes kept;
    saved as arrays (the code pickles a dict: we never write or read pickles, so the same
    arrays go into a pickle-free npz)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(CamDataset(root, ids, multi_hot, scales), batch_size=1, shuffle=False,
                        num_workers=workers, pin_memory=False)
    model.eval()
    with torch.no_grad():
        for pack in loader:
            name = pack["name"][0]
            size = (int(pack["size"][0]), int(pack["size"][1]))
            strided_size = ((size[0] - 1) // strided_stride + 1, (size[1] - 1) // strided_stride + 1)
            outputs = []
            for img in pack["img"]:
                cam = F.relu(model(img[0])["cam"])
                outputs += [cam[:1], cam[1:].flip(-1)]
            strided = _mixin(outputs, strided_size)[0]
            high = _mixin(outputs, size)[0]
            valid_cat = torch.nonzero(pack["label"][0])[:, 0]
            np.savez(out_dir / f"{name}.npz", keys=valid_cat.numpy(), cam=strided[valid_cat].numpy(),
                     high_res=high[valid_cat].numpy())


def load_cam_npy(path) -> dict:
    """A CAM file the reference loop wrote (its arrays, pickle-free)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------
# train_cam
# --------------------------------------------------------------------------
class TrainDataset(Dataset):
    """Their classification dataset: random long side 320..640 (PIL bicubic), normalise,
    random flip, random 512 crop (padded with 0), HWC -> CHW; Python's ``random`` as theirs."""

    def __init__(self, root, ids: list[str], multi_hot: dict[str, np.ndarray], crop_size: int = 512,
                 resize_long=(320, 640)):
        self.root, self.ids, self.multi_hot = Path(root), list(ids), multi_hot
        self.crop_size, self.resize_long = crop_size, resize_long

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import random

        name = self.ids[i]
        img = _read_rgb(self.root / "JPEGImages" / f"{name}.jpg")
        target = random.randint(*self.resize_long)
        h, w = img.shape[:2]
        img = _pil_rescale(img, target / h if w < h else target / w)
        img = _normalize(img)
        if bool(random.getrandbits(1)):
            img = np.fliplr(img)
        img = _random_crop(img, self.crop_size)
        return {"name": name, "img": np.transpose(img, (2, 0, 1)), "label": torch.from_numpy(self.multi_hot[name])}


def _random_crop(img: np.ndarray, size: int) -> np.ndarray:
    import random

    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    w_space, h_space = w - size, h - size
    cont_left, img_left = (0, random.randrange(w_space + 1)) if w_space > 0 else (random.randrange(-w_space + 1), 0)
    cont_top, img_top = (0, random.randrange(h_space + 1)) if h_space > 0 else (random.randrange(-h_space + 1), 0)
    out = np.zeros((size, size, img.shape[2]), img.dtype)
    out[cont_top:cont_top + ch, cont_left:cont_left + cw] = img[img_top:img_top + ch, img_left:img_left + cw]
    return out


class _PolySGD(torch.optim.SGD):
    """Their PolyOptimizer: SGD(params, lr, weight_decay) (the decay lands in the momentum
    slot), lr scaled by (1 - step / max_step) ** 0.9 before each step."""

    def __init__(self, groups, lr: float, weight_decay: float, max_step: int, power: float = 0.9):
        super().__init__(groups, lr, weight_decay)
        self.global_step, self.max_step, self.power = 0, max_step, power
        self._initial_lr = [g["lr"] for g in self.param_groups]

    def step(self, closure=None):
        if self.global_step < self.max_step:
            mult = (1 - self.global_step / self.max_step) ** self.power
            for g, lr in zip(self.param_groups, self._initial_lr):
                g["lr"] = lr * mult
        super().step(closure)
        self.global_step += 1


def _train_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Their Net.forward: stages 1-2, detached, stages 3-4, global average pool, 1x1 classifier."""
    st = model.backbone.stages
    x = st[1](st[0](x)).detach()
    x = st[3](st[2](x))
    x = x.mean(dim=(2, 3), keepdim=True)
    return model.classifier(x).flatten(1)


def train_cam(model: torch.nn.Module, root, ids: list[str], multi_hot: dict[str, np.ndarray], out_path,
              batch_size: int = 16, epochs: int = 5, lr: float = 0.1, weight_decay: float = 1e-4,
              workers: int = 0, crop_size: int = 512) -> None:
    """step/train_cam.py's loop: shuffled batches (drop_last, pinned memory asked for), the
    backbone at lr and the classifier at 10 lr, multilabel soft margin, ``loss.item()`` every
    step, the weights saved once at the end. Stages 1-2 keep their parameters trainable
    (their forward is recorded, then detached) and conv1/bn1 frozen, as theirs."""
    ds = TrainDataset(root, ids, multi_hot, crop_size)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=torch.cuda.is_available(), drop_last=True)
    stem = list(model.backbone.stage1[0].parameters()) + list(model.backbone.stage1[1].parameters())
    stem_ids = {id(p) for p in stem}
    for p in model.backbone.parameters():
        p.requires_grad_(id(p) not in stem_ids)
    head = list(model.classifier.parameters())
    backbone = list(model.backbone.parameters())
    max_step = len(ds) // batch_size * epochs
    opt = _PolySGD([{"params": backbone, "lr": lr, "weight_decay": weight_decay},
                    {"params": head, "lr": 10 * lr, "weight_decay": weight_decay}], lr, weight_decay, max_step)
    model.train()
    losses = []
    for _ in range(epochs):
        for pack in loader:
            x = _train_forward(model, pack["img"])
            loss = F.multilabel_soft_margin_loss(x, pack["label"].float())
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), out_path)
    return losses


# --------------------------------------------------------------------------
# make_pseudo
# --------------------------------------------------------------------------
def crf_inference_label(img: np.ndarray, labels: np.ndarray, n_labels: int, t: int = 10, gt_prob: float = 0.7,
                        gauss_sxy: float = 3, gauss_compat: float = 10, bilateral_sxy: float = 50,
                        bilateral_srgb: float = 5, bilateral_compat: float = 10) -> np.ndarray:
    """Their imutils.crf_inference_label: a DenseCRF2D of its own for one label map."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    d.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(np.copy(img)),
                           compat=bilateral_compat)
    q = d.inference(t)
    return np.argmax(np.array(q).reshape((n_labels, h, w)), axis=0)


def _pseudo_one(name: str, root: str, cam_dir: str, out_dir: str, fg_thres: float, bg_thres: float, crf: dict) -> None:
    img = _read_rgb(Path(root) / "JPEGImages" / f"{name}.jpg")
    cam_dict = load_cam_npy(Path(cam_dir) / f"{name}.npz")
    cams = cam_dict["high_res"]
    keys = np.pad(cam_dict["keys"] + 1, (1, 0), mode="constant")
    fg_conf_cam = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=fg_thres), axis=0)
    fg_conf = keys[crf_inference_label(img, fg_conf_cam, keys.shape[0], **crf)]
    bg_conf_cam = np.argmax(np.pad(cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=bg_thres), axis=0)
    bg_conf = keys[crf_inference_label(img, bg_conf_cam, keys.shape[0], **crf)]
    conf = fg_conf.copy()
    conf[(fg_conf == 0) & (bg_conf != 0)] = 255
    # GSLM's save_palette_image: a palette PNG (Pillow's writer, default settings)
    out = Image.fromarray(conf.astype(np.uint8)).convert("P")
    out.putpalette(_PALETTE)
    out.save(Path(out_dir) / f"{name}.png")


_PALETTE = voc_palette()  # GSLM's VOC palette (ours is the same colour map)


def _pseudo_worker(ids: list[str], root: str, cam_dir: str, out_dir: str, fg_thres: float, bg_thres: float,
                   crf: dict) -> None:
    for name in ids:
        _pseudo_one(name, root, cam_dir, out_dir, fg_thres, bg_thres, crf)


def make_pseudo(root, ids: list[str], cam_dir, out_dir, workers: int = 1, fg_thres: float = 0.30,
                bg_thres: float = 0.05, crf: dict | None = None) -> None:
    """GSLM's step/make_pseudo.py: ``workers`` freshly spawned processes (one at least, as its
    torch.multiprocessing.spawn starts them), each given every workers-th id (its
    split_dataset); per image the image and its CAM file read, a fg and a bg label map, each
    refined by a CRF of its own, combined, a palette PNG."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    n = max(1, workers)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_pseudo_worker, args=(list(ids[i::n]), str(root), str(cam_dir), str(out_dir), fg_thres,
                                                       bg_thres, crf or {})) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"make_pseudo (reference loop): a worker exited with {failed[0]}")
