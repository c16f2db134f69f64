"""A Keras-style model summary: layers, output shapes, parameters and MFLOPs.

Depends on: torch (its FLOP counter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelSummary:
    rows: list[tuple[str, str, tuple[int, ...], int]]  # (name, type, output shape, params)
    params: int
    trainable_params: int
    mflops: float  # per image, forward pass; 1 multiply-add = 2 FLOPs

    def table(self) -> str:
        lines = [f"{'layer':<10}{'type':<20}{'output shape':<22}{'params':>12}"]
        lines.append("-" * len(lines[0]))
        for name, kind, shape, params in self.rows:
            lines.append(f"{name:<10}{kind:<20}{str(shape):<22}{params:>12,}")
        lines.append("-" * len(lines[0]))
        lines.append(f"params: {self.params:,} (trainable {self.trainable_params:,})")
        lines.append(f"forward cost: {self.mflops:,.1f} MFLOPs per image")
        return "\n".join(lines)


def model_summary(model: nn.Module, input_shape: tuple[int, ...] = (1, 48, 48)) -> ModelSummary:
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:])))
        for n, m in leaves
    ]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    rows = [
        (n, type(m).__name__, shapes.get(n, ()), sum(p.numel() for p in m.parameters()))
        for n, m in leaves
    ]
    return ModelSummary(
        rows,
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        counter.get_total_flops() / 1e6,
    )
