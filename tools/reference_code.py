"""The official GSLM code as a benchmark side (``scripts/benchmark_reference.py --reference-code DIR``).

Given a checkout of github.com/Wheat2018/GSLM (an IRN derivative), the benchmark runs its
own ``step/make_cam.py``, ``step/train_cam.py`` and ``step/make_pseudo.py`` (``run(args)``,
as its ``run_sample.py`` calls them) on the benchmark's images and weights, each in a fresh
process, beside our stages and beside the plain loops of :mod:`tools.reference_loops`. That
is what calibrates the loops: the same run times the code and the loop, so the published
ratios say how far the stand-in is from the code it stands for.

The code is written for CUDA and several processes; on the CPU it runs through thin shims
applied in the child process only (nothing of the checkout is copied or changed):

* ``Tensor.cuda`` / ``Module.cuda`` return their argument, ``torch.cuda.device`` is a null
  context, ``torch.cuda.device_count`` is 1 (make_cam splits its images over that many
  processes);
* make_cam's ``torch.multiprocessing.spawn`` runs its one worker in the calling process
  (the one-GPU run: the model is not pickled to a child); make_pseudo keeps the real spawn
  (its pool is part of what is timed);
* ``torch.utils.model_zoo.load_url`` returns the benchmark's backbone weights in
  torchvision's names (the code builds its network from ImageNet weights it downloads);
* ``matplotlib.cm.get_cmap`` exists again (removed in matplotlib 3.9, imported by the code);
* train_cam's end-of-epoch ``validate`` does nothing (our train_cam and the loop have no
  per-epoch validation); its learning rate is the benchmark's (from random weights the
  recipe's 0.1 diverges; the time is the same).

Its inputs are written once under ``<out>/reference_code``: the working directory it reads
``voc12/cls_labels.npy`` from (a pickled dict, its format), its image lists, the CAM weights
in its names and the make_pseudo CAM files in its format (one pickled dict per image). The
code needs ``imageio`` and ``matplotlib`` besides what we install.
"""
from __future__ import annotations

import contextlib
import os
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np

RESULT_TAG = "BENCHMARK_RESULT "  # a child's last line of results, read by tools.benchmark_reference.run_child
STEPS = ("step/make_cam.py", "step/train_cam.py", "step/make_pseudo.py", "voc12/dataloader.py",
         "net/extractor/resnet50_cam.py", "net/refiner/refiner.py")
CAM_NETWORK = "net.extractor.resnet50_cam"
CRF_REFINER = "crf"


def check_checkout(path: str | Path) -> Path:
    """The checkout's path, or a one-line error naming what is missing (before any compute)."""
    p = Path(path).expanduser().resolve()
    missing = [s for s in STEPS if not (p / s).is_file()]
    if missing:
        raise ValueError(f"--reference-code {path}: not a checkout of github.com/Wheat2018/GSLM (no {', '.join(missing)})")
    for module in ("imageio", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            raise ValueError(f"--reference-code: the GSLM code imports {module}; pip install imageio matplotlib") from None
    return p


# --------------------------------------------------------------------------
# names: our CAM network -> the code's
# --------------------------------------------------------------------------
def to_code_names(sd: dict) -> dict:
    """wsss CAMNet (``backbone.stage1.<i>``, ``backbone.stage{2,3,4}``, ``classifier``) -> the
    code's Net (``stage1.<i>``, ``stage{2,3,4}.0`` (each layer wrapped in a Sequential))."""
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone.stage1."):
            out[k[len("backbone."):]] = v
        elif k.startswith("backbone.stage"):
            stage, rest = k[len("backbone."):].split(".", 1)
            out[f"{stage}.0.{rest}"] = v
        else:
            out[k] = v
    return out


def to_torchvision_names(sd: dict) -> dict:
    """The backbone of a wsss CAMNet in torchvision's ResNet names (what model_zoo returns to
    the code): stage1's conv / bn / layer1 -> conv1, bn1, layer1; stage k -> layer k. The code
    drops ``fc.*``; zeros of torchvision's shape stand for them."""
    import torch

    names = {"0": "conv1", "1": "bn1", "4": "layer1"}
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone.stage1."):
            i, rest = k[len("backbone.stage1."):].split(".", 1)
            out[f"{names[i]}.{rest}"] = v
        elif k.startswith("backbone.stage"):
            stage, rest = k[len("backbone.stage"):].split(".", 1)
            out[f"layer{stage}.{rest}"] = v
    width = out["layer4.2.bn3.weight"].shape[0] if "layer4.2.bn3.weight" in out else 2048
    out["fc.weight"], out["fc.bias"] = torch.zeros(1000, width), torch.zeros(1000)
    return out


# --------------------------------------------------------------------------
# inputs, written once
# --------------------------------------------------------------------------
def prepare(out: Path, data_root: str, splits: dict[str, list[str]], cam_weights: str, labels: dict[str, np.ndarray]) -> dict:
    """Under ``out``: ``cwd/voc12/cls_labels.npy`` (int-coded ids -> float32 multi-hot, the
    code's format), one image list per split, the CAM weights in the code's names."""
    import torch

    from wsss.fileio import atomic_path

    out = Path(out).resolve()  # the code runs in a working directory of its own
    out.mkdir(parents=True, exist_ok=True)
    (out / "cwd" / "voc12").mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "cwd" / "voc12" / "cls_labels.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, {int(i.replace("_", "")): v.astype(np.float32) for i, v in labels.items()})
    lists = {}
    for name, ids in splits.items():
        lists[name] = str(out / f"{name}.txt")
        with atomic_path(lists[name]) as tmp:
            Path(tmp).write_text("".join(f"{i}\n" for i in ids))
    weights = out / "cam_weights_code_names.pth"
    if not weights.is_file():
        with atomic_path(weights) as tmp:
            torch.save(to_code_names(torch.load(cam_weights, map_location="cpu", weights_only=True)), tmp)
    return {"cwd": str(out / "cwd"), "lists": lists, "cam_weights": str(weights), "voc12_root": str(Path(data_root).resolve())}


def write_code_cams(ids: list[str], ours_dir: str | Path, out_dir: Path) -> str:
    """Our CAM files in the code's format (``np.save`` of a dict: keys, cam, high_res), once."""
    from wsss.data.cam_files import cam_path, load_cam
    from wsss.fileio import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    for i in ids:
        if (out_dir / f"{i}.npy").is_file():
            continue
        d = load_cam(cam_path(ours_dir, i))
        with atomic_path(out_dir / f"{i}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, {"keys": d["keys"], "cam": d.get("cam", d["high_res"]), "high_res": d["high_res"]})
    return str(out_dir)


# --------------------------------------------------------------------------
# one step of the code, in this (child) process
# --------------------------------------------------------------------------
def _inline_spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    for i in range(nprocs):
        fn(i, *args)


def _shims(zoo_state: dict | None, inline_spawn: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.cm
    import torch
    import torch.multiprocessing
    import torch.utils.model_zoo

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.device = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.device_count = lambda: 1
    if inline_spawn:
        torch.multiprocessing.spawn = _inline_spawn
    if zoo_state is not None:
        torch.utils.model_zoo.load_url = lambda url, *a, **k: {k2: v.clone() for k2, v in zoo_state.items()}
    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = lambda name=None, lut=None: matplotlib.colormaps[name or "viridis"]


PATHS = ("out_dir", "cam_dir", "work", "weights", "init_weights")


def _enter(spec: dict) -> None:
    """The spec's paths made absolute, the code first on sys.path (inherited by spawned
    children), its working directory."""
    for key in PATHS:
        if key in spec:
            spec[key] = str(Path(spec[key]).resolve())
    code = spec["code"]
    if code not in sys.path:
        sys.path.insert(0, code)
    os.chdir(spec["inputs"]["cwd"])  # voc12/dataloader.py loads voc12/cls_labels.npy from here


def _zoo(weights: str) -> dict:
    import torch

    return to_torchvision_names(torch.load(weights, map_location="cpu", weights_only=True))


def run_make_cam(spec: dict) -> dict:
    import importlib

    import torch

    inp = spec["inputs"]
    _shims(_zoo(spec["weights"]), inline_spawn=True)
    _enter(spec)
    Path(spec["out_dir"]).mkdir(parents=True, exist_ok=True)
    importlib.import_module("step.make_cam").run(Namespace(
        cam_network=CAM_NETWORK, cam_weights_name=inp["cam_weights"], cam_out_dir=spec["out_dir"],
        train_list=inp["lists"][spec["split"]], voc12_root=inp["voc12_root"], cam_scales=tuple(spec["scales"]),
        num_workers=spec["workers"]))
    return {"threads": torch.get_num_threads(), "files": len(list(Path(spec["out_dir"]).glob("*.npy")))}


def run_train_cam(spec: dict) -> dict:
    import importlib

    import torch

    inp = spec["inputs"]
    torch.manual_seed(spec["seed"])
    _shims(_zoo(spec["init_weights"]), inline_spawn=True)
    _enter(spec)
    Path(spec["work"]).mkdir(parents=True, exist_ok=True)
    step = importlib.import_module("step.train_cam")
    step.validate = lambda model, data_loader: None
    lst = inp["lists"][spec["split"]]
    step.run(Namespace(cam_network=CAM_NETWORK, train_list=lst, val_list=lst, voc12_root=inp["voc12_root"],
                       cam_batch_size=spec["batch"], num_workers=spec["workers"], cam_num_epoches=1,
                       cam_learning_rate=spec["lr"], cam_weight_decay=1e-4,
                       cam_weights_name=str(Path(spec["work"]) / "res50_cam.pth")))
    return {"threads": torch.get_num_threads()}


def run_make_pseudo(spec: dict) -> dict:
    import importlib

    inp = spec["inputs"]
    _shims(None, inline_spawn=False)
    _enter(spec)
    Path(spec["out_dir"]).mkdir(parents=True, exist_ok=True)
    refiner = importlib.import_module("net.refiner.refiner").refiner_wrapper(CRF_REFINER)
    importlib.import_module("step.make_pseudo").run(Namespace(
        cam_out_dir=spec["cam_dir"], pseudo_out_dir=spec["out_dir"], conf_fg_thres=0.30, conf_bg_thres=0.05,
        train_list=inp["lists"][spec["split"]], voc12_root=inp["voc12_root"], cam_refiner=refiner,
        num_workers=spec["workers"]))
    return {"files": len(list(Path(spec["out_dir"]).glob("*.png")))}


RUNNERS = {"make_cam": run_make_cam, "train_cam": run_train_cam, "make_pseudo": run_make_pseudo}


if __name__ == "__mp_main__":
    # make_pseudo's spawned workers run this module as __mp_main__: the get_cmap shim for them
    _shims(None, inline_spawn=False)
elif __name__ == "__main__":
    import json

    stage, spec_file = sys.argv[1:]
    result = RUNNERS[stage](json.loads(Path(spec_file).read_text()))
    print(RESULT_TAG + json.dumps(result), flush=True)
