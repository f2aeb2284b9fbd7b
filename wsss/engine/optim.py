"""SGD with polynomial decay, the schedule of every WSSS recipe here."""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def build_sgd(groups: list[dict], lr: float, momentum: float, weight_decay: float, nesterov: bool = False) -> torch.optim.SGD:
    """``groups``: dicts with 'params' and optional 'lr_mult' / 'weight_decay'.

    Momentum is explicit. The IRN/GSLM PolyOptimizer passed weight decay into
    SGD's momentum slot, so reproduction configs set ``momentum: 0``.
    """
    param_groups = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        param_groups.append({
            "params": params,
            "lr": lr * g.get("lr_mult", 1.0),
            "weight_decay": g.get("weight_decay", weight_decay),
            "name": g.get("name", ""),
        })
    return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


def poly_lambda(total_steps: int, power: float, span: tuple[float, float] = (0.0, 1.0)):
    a, b = span

    def f(step: int) -> float:
        progress = a + (b - a) * min(step, total_steps) / max(total_steps, 1)
        return max(1 - progress, 0.0) ** power

    return f


def build_poly(optimizer: torch.optim.Optimizer, total_steps: int, power: float,
               span: tuple[float, float] = (0.0, 1.0)) -> LambdaLR:
    """lr(step) = base_lr * (1 - step / total) ** power; step 0 uses the full rate (as IRN).

    ``span`` maps this schedule onto a part of a longer one: (0.5, 1.0) continues
    a decay that is half done (PPL stages without restarts).
    """
    return LambdaLR(optimizer, poly_lambda(total_steps, power, span))
