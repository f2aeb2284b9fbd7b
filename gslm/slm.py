"""GSLM's Specific Learning Module: R rounds of fine-tuning with Seed Reactivation.

The GLM is whatever CAM model the config names (trained by its own phases).
Round r (1..R) starts from the current weights, trains E epochs on the current
pseudo masks with ``cls_loss + lambda * SR_loss`` (its own optimiser, a
restarted poly schedule), then regenerates CAMs and pseudo masks with the
shared make_cam / make_pseudo code; they are the next round's targets. Every
model (GLM = round 0, then each round) is evaluated: CAM mIoU at the round's
reporting threshold and at the best threshold of the sweep, and the
pseudo-mask mIoU. Outputs::

    <work_dir>/gslm/round<r>/cams, pseudo      (round 0 = the GLM)
    <work_dir>/checkpoints/slm_round<r>.pth
    <work_dir>/metrics/gslm_round<r>.json, gslm_rounds.json, gslm_rounds.md
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from gslm.config import GSLMConfig  # noqa: F401  (re-exported: gslm.slm.GSLMConfig)
from gslm.loss import seed_reactivation_loss
from gslm.outputs import ROUNDS_TABLE, round_dir, rounds_of
from wsss import layout
from wsss.cam.evaluate import evaluate_cams
from wsss.cam.make import make_cams
from wsss.cam.training import cam_param_groups, classification_dataset, visualize_first
from wsss.config import ConfigError
from wsss.data.labels import ImageLabels
from wsss.engine.checkpoint import unwrap
from wsss.engine.distributed import barrier
from wsss.engine.trainer import Phase, Schedule, TrainContext
from wsss.fileio import read_json
from wsss.models.cam_net import multilabel_soft_margin
from wsss.parallel import workers_for
from wsss.pseudo.make import evaluate_masks, make_pseudo_masks
from wsss.reports import md_table, pct, save_metrics


def report_threshold(cfg, r: int) -> float:
    g = cfg.gslm
    return round(g.report_threshold_start + g.report_threshold_step * max(r - 1, 0), 6)


def round_name(r: int) -> str:
    return "GLM" if r == 0 else f"round {r}"


def sr_loss_fn(cfg):
    g = cfg.gslm

    def compute(net, batch: dict, ctx: TrainContext) -> dict:
        out = net(batch["img"])
        cls = multilabel_soft_margin(out["logits"].float(), batch["label"])
        # The SR loss is a sum over the batch's images (the reference trains one process
        # on the whole batch), but DDP averages gradients over ranks: scaled by the world
        # size, N ranks of B/N images train as one process with B images.
        sr = seed_reactivation_loss(out["cam"], batch["mask"], batch["label"], g.beta) * ctx.world_size
        return {"loss": cls + g.sr_weight * sr, "cls": cls, "sr": sr}

    return compute


def ensure_round_outputs(model: torch.nn.Module, ctx: TrainContext, r: int) -> None:
    """CAMs + pseudo masks + metrics of the current model as round ``r`` (idempotent)."""
    cfg = ctx.cfg
    d = round_dir(cfg, r)
    metrics_file = ctx.metrics_dir / f"gslm_round{r}.json"
    pseudo_done = (d / "pseudo.done").is_file()
    if pseudo_done and (metrics_file.is_file() or not cfg.gslm.evaluate):
        return
    bare = unwrap(model)
    was_training = bare.training
    bare.eval()
    if not pseudo_done:
        ctx.log(f"[gslm] {round_name(r)}: CAMs and pseudo masks -> {d}")
        make_cams(cfg, bare, ctx.device, split=cfg.cam.split, out_dir=d / "cams")
        barrier()
        make_pseudo_masks(cfg, split=cfg.cam.split, cam_dir=d / "cams", out_dir=d / "pseudo")
        barrier()
        if ctx.is_main:
            (d / "pseudo.done").write_text("ok\n")
        barrier()
    eval_cams = d / "cams"
    if cfg.gslm.evaluate and r > 0 and cfg.gslm.round_eval_cams == "nearest" and not metrics_file.is_file():
        eval_cams = d / "cams_eval_nearest"
        ncfg = copy.deepcopy(cfg)
        ncfg.cam.resize_mode = "nearest"
        make_cams(ncfg, bare, ctx.device, split=cfg.eval_cam.split, out_dir=eval_cams)
        barrier()
    if cfg.gslm.evaluate and ctx.is_main and not metrics_file.is_file():
        evaluate_round(cfg, r, eval_cams)
        write_rounds_table(cfg)
    barrier()
    bare.train(was_training)


def evaluate_round(cfg, r: int, cam_dir: Path | None = None) -> dict:
    d = round_dir(cfg, r)
    t = report_threshold(cfg, r)
    ecfg = copy.deepcopy(cfg)
    ecfg.eval_cam.report_threshold = t
    ecfg.eval_cam.crf = True
    cams = evaluate_cams(ecfg, cam_dir=cam_dir or d / "cams", name=f"gslm_round{r}_cam", verbose=False)
    # "CAM+CRF" is the number the reference prints after each round (the CAM at the round's
    # threshold refined by the pseudo masks' label CRF); "CAM" is the plain score.
    out = {"round": r, "name": round_name(r), "cam_dir": str(cam_dir or d / "cams"), "report_threshold": t,
           "cam_miou_at_report": cams["report"]["miou"], "cam_crf_miou_at_report": cams["miou_crf"],
           "cam_miou_best": cams["miou"], "best_threshold": cams["best_threshold"]}
    if cfg.pseudo.eval_split:
        names = ["background"] + ImageLabels.load(cfg.data.label_file, cfg.data.num_classes).classes
        pm = evaluate_masks(cfg, d / "pseudo", cfg.pseudo.eval_split, names, workers=workers_for(cfg.pseudo.workers, whole_node=True))
        out.update({"pseudo_miou_255_as_bg": pm["miou_255_as_background"], "pseudo_miou_confident": pm["miou_confident_pixels"],
                    "pseudo_confident_fraction": pm["confident_fraction"]})
    save_metrics(cfg, f"gslm_round{r}", out, md_table(["", "value"], [[k, v] for k, v in out.items()]))
    print(f"[gslm] {round_name(r)}: CAM mIoU {pct(out['cam_miou_at_report'])} at {t:.2f} "
          f"(CAM+CRF {pct(out['cam_crf_miou_at_report'])}), {pct(out['cam_miou_best'])} at best {out['best_threshold']:.2f}"
          + (f"; pseudo-mask mIoU {pct(out['pseudo_miou_255_as_bg'])}" if "pseudo_miou_255_as_bg" in out else ""), flush=True)
    return out


def write_rounds_table(cfg) -> dict:
    """metrics/gslm_rounds.json and .md from every evaluated round so far; printed."""
    rows = []
    for r in range(cfg.gslm.rounds + 1):
        f = layout.metrics_dir(cfg) / f"gslm_round{r}.json"
        if f.is_file():
            rows.append({k: v for k, v in read_json(f).items() if k != "config"})
    header = ["model", "round thr.", "CAM mIoU @ round thr.", "CAM+CRF mIoU @ round thr.", "CAM mIoU @ best", "best thr.",
              "pseudo mIoU (255=bg)", "pseudo mIoU (confident)"]
    table = [[x["name"], f"{x['report_threshold']:.2f}", pct(x["cam_miou_at_report"]), pct(x.get("cam_crf_miou_at_report")),
              pct(x["cam_miou_best"]), f"{x['best_threshold']:.2f}", pct(x.get("pseudo_miou_255_as_bg")),
              pct(x.get("pseudo_miou_confident"))] for x in rows]
    md = (f"# GSLM rounds ({cfg.exp_name})\n\n" + md_table(header, table)
          + "\nCAM: the plain CAM against GT. CAM+CRF: the CAM at the round's threshold refined by the pseudo masks'"
          " label CRF, the number the reference code prints after each round (it scores its GLM without CRF).\n")
    save_metrics(cfg, ROUNDS_TABLE, {"rounds": rows}, md)
    print(md_table(header, table))
    return {"rounds": rows}


def slm_phases(cfg) -> list[Phase]:
    g = getattr(cfg, "gslm", None)
    if g is None:  # the config does not use GSLM
        return []
    if g.rounds < 0:
        raise ConfigError(f"gslm.rounds must be >= 0, got {g.rounds}")
    phases = []
    for r in range(1, g.rounds + 1):
        sched = Schedule.from_config(g, loop=cfg.train, batch_size=g.batch_size or cfg.train.batch_size)
        mask_dir = g.target_masks if r == 1 and g.target_masks else str(round_dir(cfg, r - 1) / "pseudo")
        phases.append(Phase(
            name=f"slm_round{r}",
            schedule=sched,
            # the pseudo masks go through the same geometric transforms as the image (pad 255)
            build_dataset=lambda ctx, m=mask_dir: classification_dataset(ctx.cfg, mask_dir=m),
            compute_loss=sr_loss_fn(cfg),
            param_groups=lambda m: cam_param_groups(m, g.head_lr_mult),
            setup=lambda model, ctx, prev=r - 1: ensure_round_outputs(model, ctx, prev),
            finish=lambda model, ctx, cur=r: ensure_round_outputs(model, ctx, cur),
            visualize=visualize_first,
            seed_offset=100 + r,
            batch_key="gslm.batch_size" if g.batch_size else "train.batch_size",
        ))
    return phases


def bench_phase(cfg) -> Phase | None:
    """What scripts/benchmark.py times for a GSLM config: SLM round 1, with the ground-truth
    masks standing in for the GLM's pseudo masks (the same files and work per step)."""
    if rounds_of(cfg) < 1:
        return None
    phase = slm_phases(cfg)[0]
    phase.build_dataset = lambda ctx: classification_dataset(ctx.cfg, mask_dir="SegmentationClassAug")
    phase.setup = phase.finish = None
    return phase
