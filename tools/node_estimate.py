"""Where the time of GSLM's VOC run goes on a 4-GPU, 16-core node: an estimate whose every input
is measured here or cited (scripts/node_estimate.py; docs/performance.md).

The work is read from the configs (``configs/gslm/gslm_r50_voc12.yaml``): the GLM's training,
each SLM round's training, the CAMs of train_aug after the GLM and after every round, the
nearest-resize CAMs each round is scored on, one pseudo-mask pass (two label CRFs per image)
over train_aug per model plus the pipeline's final make_pseudo, and a CAM+CRF evaluation (one
label CRF per image) of train per model plus the final eval_cam. IRN and DeepLab are left out
(their share is the same whichever CRF runs).

* **GPU time**: the floating-point operations of each kind of step, counted here by
  ``torch.utils.flop_counter`` on our own networks (meta tensors, no compute), divided by the
  rate an A100 reaches on ResNet-50 training in TF32: 938 images/s at 224 x 224 for one GPU,
  7,248 for eight (NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, "Training
  performance: NVIDIA DGX A100 (8x A100 80GB)", pytorch-21.03 container), times the FLOPs of
  one such training image counted the same way. Inference is assumed to reach the same rate;
  four GPUs the eight-GPU table's per-GPU efficiency (7,248 / 8 / 938). Both sides (the
  official code and ours) get the same GPU time: it is not measured here (no GPU).
* **CPU time (the CRF)**: core-seconds per image measured on this machine by
  scripts/benchmark_reference.py (docs/results/benchmark_reference.json): ours from the cost of
  N more images at two workers (start-up excluded), the official code's as ours times the
  measured CPU-time ratio code / ours; an evaluation's single CRF from our make_pseudo profile
  (pairwise terms + one of the two inferences). Sixteen workers at the per-process efficiency
  two processes reached on this machine's two cores (docs/results/crf_throughput.json).
  Cores of the users' nodes differ from these; the ratio between the rows does not depend on it.

Stages run one after the other (each waits for the previous one's files), so the wall time
is the sum, and the GPUs idle while the CRF runs.
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/gslm/gslm_r50_voc12.yaml"
VOC = {"train_aug": 10582, "train": 1464}  # image counts of the VOC 2012 splits (with SBD's train_aug)
# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
# "Training performance: NVIDIA DGX A100 (8x A100 80GB)": TF32, 224 x 224
A100_TF32_IMG_S = {1: 938.0, 8: 7248.0}
CITATION = ("NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, Training performance: DGX A100 (8x A100 80GB), "
            "TF32: 938 img/s on 1 GPU, 7248 on 8 (224 px)")
GPUS, CORES = 4, 16


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def step_flops(cfg) -> dict:
    """FLOPs of one image of each kind of work, on meta tensors: a training step of the CAM
    network on a crop (forward + backward, as configured: frozen stem, stages 1-2 detached),
    multi-scale + flip CAM inference on a 500 x 375 image (our make_cam's scales), and the
    reference point, torchvision's ResNet-50 training step at 224 x 224."""
    import torch
    import torchvision

    from wsss.cam.training import build_cam_model

    crop = cfg.train.aug.crop_size
    with torch.device("meta"):
        net = build_cam_model(cfg, pretrained=False)
        ref = torchvision.models.resnet50(weights=None)
    net.train()

    def train_step():
        out = net(torch.randn(1, 3, crop, crop, device="meta"))
        out["logits"].sum().backward()

    def ref_step():
        ref(torch.randn(1, 3, 224, 224, device="meta")).sum().backward()

    def cam_image():
        with torch.no_grad():
            for s in cfg.cam.scales:
                h, w = round(375 * s), round(500 * s)
                net.forward_cam(torch.randn(2 if cfg.cam.flip else 1, 3, h, w, device="meta"))

    net.eval()
    cam = _flops(cam_image)
    net.train()
    return {"cam_train_step": _flops(train_step), "cam_inference_image": cam, "resnet50_224_train_step": _flops(ref_step)}


def work(cfg) -> list[dict]:
    """The run's work, read from the config: (name, kind, images)."""
    r = cfg.gslm.rounds
    per_epoch = (VOC["train_aug"] // cfg.train.batch_size) * cfg.train.batch_size
    return [
        {"name": f"GLM training ({cfg.train.epochs} epochs of train_aug)", "kind": "train", "images": cfg.train.epochs * per_epoch},
        {"name": f"SLM training ({r} rounds x {cfg.gslm.epochs} epochs)", "kind": "train", "images": r * cfg.gslm.epochs * per_epoch},
        {"name": f"CAMs of train_aug (GLM + {r} rounds)", "kind": "infer", "images": (r + 1) * VOC["train_aug"]},
        {"name": f"nearest-resize CAMs of train ({r} rounds' scores)", "kind": "infer", "images": r * VOC["train"]},
        {"name": f"pseudo masks of train_aug, 2 CRFs per image ({r + 1} models + final make_pseudo)", "kind": "crf_pseudo",
         "images": (r + 2) * VOC["train_aug"]},
        {"name": f"CAM+CRF evaluations of train, 1 CRF per image ({r + 1} models + final eval_cam)", "kind": "crf_eval",
         "images": (r + 2) * VOC["train"]},
    ]


def crf_costs(bench: dict, throughput: dict) -> dict:
    """Core-seconds per image of the pseudo-mask CRF pass (ours, the official code's) and of an
    evaluation's one CRF, and the per-process efficiency of a second process."""
    sc = bench["scaling"]["make_pseudo"]
    ours_pseudo = sc["marginal_s_per_image"]["ours"] * sc["workers"]
    key = f"workers_{sc['workers']}"
    cpu_ratio = bench["make_pseudo"][key]["code_over_ours"]["cpu_ratio"]
    parts = bench["profile"]["make_pseudo"]["s_per_image"]
    total = sum(parts.values())
    eval_share = (total - parts["unary + 2 inferences"] / 2) / total  # one inference instead of two
    r = throughput["ratio_to_pydensecrf_1_proc"]
    two = next(v["median"] for k, v in r.items() if k.startswith("pydensecrf") and "2 proc" in k)
    return {"ours_pseudo_core_s": ours_pseudo, "code_pseudo_core_s": ours_pseudo * cpu_ratio,
            "code_over_ours_cpu_ratio": cpu_ratio, "eval_share_of_pseudo": eval_share, "process_efficiency": two / 2}


def estimate(config: str = CONFIG, results: Path = REPO / "docs" / "results") -> dict:
    from wsss.config import load_config

    cfg = load_config(REPO / config, ["model.weights=none"])
    flops = step_flops(cfg)
    bench = json.loads((results / "benchmark_reference.json").read_text())["data"]
    throughput = json.loads((results / "crf_throughput.json").read_text())["data"]
    crf = crf_costs(bench, throughput)
    gpu_flop_s = A100_TF32_IMG_S[1] * flops["resnet50_224_train_step"]
    gpu_eff = A100_TF32_IMG_S[8] / 8 / A100_TF32_IMG_S[1]
    node_flop_s = GPUS * gpu_flop_s * gpu_eff
    cores = CORES * crf["process_efficiency"]
    rows = []
    for w in work(cfg):
        if w["kind"] in ("train", "infer"):
            f = flops["cam_train_step" if w["kind"] == "train" else "cam_inference_image"] * w["images"]
            s = f / node_flop_s
            rows.append({**w, "device": "GPU", "before_s": s, "after_s": s})
        else:
            share = 1.0 if w["kind"] == "crf_pseudo" else crf["eval_share_of_pseudo"]
            rows.append({**w, "device": "CPU", "before_s": w["images"] * crf["code_pseudo_core_s"] * share / cores,
                         "after_s": w["images"] * crf["ours_pseudo_core_s"] * share / cores})
    total = {side: sum(r[f"{side}_s"] for r in rows) for side in ("before", "after")}
    cpu = {side: sum(r[f"{side}_s"] for r in rows if r["device"] == "CPU") for side in ("before", "after")}
    return {"config": config, "gpus": GPUS, "cores": CORES, "voc_images": VOC, "flops": flops, "citation": CITATION,
            "a100_tf32_img_s": A100_TF32_IMG_S, "gpu_efficiency_at_scale": gpu_eff, "crf": crf, "rows": rows,
            "total_s": total, "crf_s": cpu, "gpu_idle_share": {k: cpu[k] / total[k] for k in total}}


def render(d: dict) -> str:
    from wsss.reports import md_table

    rows = [[r["name"], r["device"], f"{r['images']:,}", f"{r['before_s'] / 60:.1f}", f"{r['after_s'] / 60:.1f}"] for r in d["rows"]]
    rows.append(["**total** (stages in sequence)", "", "", f"**{d['total_s']['before'] / 60:.0f}**", f"**{d['total_s']['after'] / 60:.0f}**"])
    rows.append(["GPUs idle (the CRF's share of the wall)", "", "", f"{d['gpu_idle_share']['before']:.0%}",
                 f"{d['gpu_idle_share']['after']:.0%}"])
    c, f = d["crf"], d["flops"]
    head = (f"{d['gpus']} GPUs (A100, TF32), {d['cores']} cores; minutes. Before: the official code's CRF "
            f"({c['code_pseudo_core_s']:.2f} core-s per image, {c['code_over_ours_cpu_ratio']:.2f}x ours in CPU time); "
            f"after: ours ({c['ours_pseudo_core_s']:.2f} core-s per image, pydensecrf on the CPU); GPU stages equal on both sides. "
            f"FLOPs per image (counted): CAM training step {f['cam_train_step'] / 1e9:.0f} G, multi-scale CAM inference "
            f"{f['cam_inference_image'] / 1e9:.0f} G, ResNet-50 at 224 px {f['resnet50_224_train_step'] / 1e9:.1f} G "
            f"(the cited rate's unit). GPU rate cited: {d['citation']}.\n\n")
    return head + md_table(["work", "on", "images", "before (min)", "after (min)"], rows)
