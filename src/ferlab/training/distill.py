"""Knowledge distillation: a small student learns from a trained teacher's soft predictions.

Set `train.teacher` to any ferlab model reference ("bundled" = the shipped model, or an
ensemble file from `ferlab ensemble`).
Each training batch - after augmentation, so student and teacher see the very same
pixels - goes through the frozen teacher too, and the loss becomes

    (1 - w) * cross_entropy(student, labels) + w * T^2 * KL(teacher_T || student_T)

with w = `train.distill_weight` and T = `train.distill_temperature` (Hinton et al.
2015; the T^2 keeps the soft term's gradients on the scale of the hard one).
FER2013's labels are noisy (human accuracy ~65%), so a teacher's soft targets
carry more signal than its one-hot labels: this is how ferlab's small, fast model
is trained.

Depends on: classifier (loads the teacher like any model), checkpoint (error type), models,
preprocess, runtime; torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.runtime import Runtime
from ..data.preprocess import Preprocessing
from ..inference.checkpoint import CheckpointError
from ..inference.classifier import load_classifier, require_torch
from ..models.ensemble import without_member_tta


def load_teacher(ref: str, class_names: tuple[str, ...], pp: Preprocessing, runtime: Runtime) -> nn.Module:
    """The teacher on the training device, frozen, in eval mode; checked against the data."""
    teacher = require_torch(load_classifier(ref, device="cpu", precision="fp32"), "train.teacher")
    if tuple(teacher.class_names) != tuple(class_names):
        raise CheckpointError(
            f"train.teacher {teacher.path}: classes {', '.join(teacher.class_names)} differ from "
            f"the data's ({', '.join(class_names)})"
        )
    if teacher.preprocessing != pp:
        raise CheckpointError(
            f"train.teacher {teacher.path}: its preprocessing {teacher.preprocessing.to_dict()} "
            f"differs from this run's {pp.to_dict()}"
        )
    # An ensemble teacher's members see the augmented batch as it is: their TTA would cost
    # its views again on every training step.
    model = runtime.prepare_model(without_member_tta(teacher.model)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    weight: float,
    temperature: float,
    label_smoothing: float = 0.0,
    hard: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1 - weight) * the supervised loss + weight * the teacher term. `hard` is the
    supervised loss where the caller has it (soft FER+ targets); else cross-entropy on `labels`."""
    if hard is None:
        hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    return (1 - weight) * hard + weight * soft
