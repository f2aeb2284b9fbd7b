"""A gate of the graded bench: can the pretrained backbone tell the body families apart?

The graded scene (``data.synthetic.shared_body`` < 1) gives each class a body motif of its
own. A method can only carry what it learns from a seed to the rest of an object if the
network's features can see that motif at all; a backbone whose pooled features do not
separate the families would make every level the negative control. So before any arm runs,
the bench draws scenes of the level's design with every class body in its own family
(decoys in the shared one), pools the pretrained backbone's last-stage features over each
visible body (outside its part), and fits a linear probe (multinomial logistic regression)
on two thirds of the scenes; the gate is its accuracy on the other third against chance
(the most frequent family's share), beyond three binomial standard deviations of chance.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PROBE_SEED = 7301  # a stream no data seed of the bench draws
PROBE_SCENES = 240


def body_samples(scene: str, part_colours: str, decoys: int, num_classes: int, image_size: int, n: int,
                 seed: int = PROBE_SEED) -> list[tuple[np.ndarray, list[tuple[np.ndarray, str]]]]:
    """``n`` scenes with every class body in its class's family: (image, [(visible body mask
    outside parts, family)]); decoys' bodies carry the shared family."""
    from wsss.data.synthetic import SHARED_BODY, class_styles, draw_scene

    rng, family_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    styles = class_styles(num_classes, part_colours)
    out = []
    for _ in range(n):
        sc = draw_scene(rng, image_size, styles, scene=scene, decoys=decoys, shared_body=0.0, family_rng=family_rng)
        owner = np.full(sc.label.shape, -1)
        for i, inst in enumerate(sc.instances):
            owner[inst.mask] = i
        bodies = [((owner == i) & (sc.parts == 0), fam) for i, fam in enumerate(sc.families)]
        if decoys:
            bodies.append((sc.decoys == 1, SHARED_BODY))
        out.append((sc.img, [(m, f) for m, f in bodies if m.sum() >= 64]))
    return out


@torch.no_grad()
def pooled_features(backbone_stages: list[torch.nn.Module], samples, mean, std) -> tuple[np.ndarray, list[str], list[int]]:
    """Per body: the last stage's features averaged over the body (its mask at feature size,
    area-weighted). Returns (features [N, C], families, scene index of each)."""
    feats, fams, scene_of = [], [], []
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    for n, (img, bodies) in enumerate(samples):
        if not bodies:
            continue
        x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - m) / s
        for stage in backbone_stages:
            x = stage(x)
        for mask, fam in bodies:
            w = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], x.shape[-2:])
            feats.append(((x * w).sum((2, 3)) / w.sum().clamp(min=1e-6))[0].numpy())
            fams.append(fam)
            scene_of.append(n)
    return np.stack(feats), fams, scene_of


def linear_probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, weight_decay: float = 1e-3, steps: int = 200) -> np.ndarray:
    """Multinomial logistic regression on standardised features (full-batch L-BFGS); the
    predicted class of every row."""
    torch.manual_seed(0)
    xt = torch.from_numpy(x).float()
    mu, sd = xt[train].mean(0), xt[train].std(0) + 1e-6
    xt = (xt - mu) / sd
    yt = torch.from_numpy(y).long()
    k = int(y.max()) + 1
    lin = torch.nn.Linear(x.shape[1], k)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    idx = torch.from_numpy(np.nonzero(train)[0])

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xt[idx]), yt[idx]) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return lin(xt).argmax(1).numpy()


def probe_body_families(cfg, scenes: int = PROBE_SCENES) -> dict:
    """The gate on ``cfg``'s scene design and pretrained backbone (``model.weights``)."""
    from wsss.cam.training import build_cam_model
    from wsss.pretrain import ensure_pretrained

    s = cfg.data.synthetic
    ensure_pretrained(cfg)
    model = build_cam_model(cfg).eval()
    samples = body_samples(s.scene, s.part_colours, s.decoys, s.num_classes, s.image_size, scenes)
    x, fams, scene_of = pooled_features(list(model.backbone.stages), samples, cfg.train.aug.mean, cfg.train.aug.std)
    names = sorted(set(fams))
    y = np.array([names.index(f) for f in fams])
    train = np.array(scene_of) % 3 != 2  # whole scenes to one side: no body is tested beside its own image's
    pred = linear_probe(x, y, train)
    test = ~train
    acc = float((pred[test] == y[test]).mean())
    counts = np.bincount(y[test], minlength=len(names))
    chance = float(counts.max() / counts.sum())
    margin = 3 * float(np.sqrt(chance * (1 - chance) / test.sum()))
    per_family = {f: float((pred[test & (y == i)] == i).mean()) if (test & (y == i)).any() else None
                  for i, f in enumerate(names)}
    return {"families": names, "bodies": int(len(y)), "test_bodies": int(test.sum()), "accuracy": acc,
            "chance": chance, "margin": margin, "ok": acc > chance + margin, "per_family": per_family,
            "features": "last stage, averaged over each visible body outside its part",
            "weights": cfg.model.weights}
