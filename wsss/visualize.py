"""Side-by-side PNGs for a few ids: image | CAM overlay per class | pseudo mask | GT."""
from __future__ import annotations

from pathlib import Path

from wsss.cam.files import cam_path, load_cam
from wsss.config import Config
from wsss.data.voc import VOCLayout
from wsss.fileio import read_image, read_mask
from wsss.viz import save_panel


def write_panels(cfg: Config, n: int | None = None, ids: list[str] | None = None, out_dir: str | Path | None = None) -> list[str]:
    layout = VOCLayout(cfg.data.root)
    split = cfg.pseudo.eval_split or cfg.cam.split
    if ids is None:
        ids = layout.read_split(split)[: (n if n is not None else cfg.pipeline.visualize_ids)]
    out_dir = Path(out_dir or Path(cfg.work_dir) / "vis")
    written = []
    for image_id in ids:
        img = read_image(layout.image(image_id))
        cp = cam_path(cfg.cam.out_dir, image_id)
        cams = load_cam(cp, img.shape[:2])["high_res"] if cp.is_file() else None
        pp = Path(cfg.pseudo.out_dir) / f"{image_id}.png"
        pseudo = read_mask(pp) if pp.is_file() else None
        gp = layout.mask(image_id, cfg.data.gt_dir)
        gt = read_mask(gp) if gp.is_file() else None
        path = out_dir / f"{image_id}.png"
        save_panel(path, img=img, cams=cams, pseudo=pseudo, gt=gt)
        written.append(str(path))
    return written
