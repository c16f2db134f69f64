"""The evaluation report: one self-contained HTML page to look at, and its figures for notebooks.

`build_report(classifier, scored)` gathers everything from one scored split
(`evaluation.score`): the metrics, confusion matrices (counts and normalised),
per-class precision/recall/F1, the reliability diagram, and the most confident
mistakes of each true class as face crops beside their saliency maps (Grad-CAM of
the wrongly predicted class; PyTorch models only). `report.figures` are matplotlib
Figures (a notebook shows them inline); `write_html` renders the page with every
figure and image inlined as a PNG data URL, so it opens from disk in any browser
with no server and travels as one file. The page also carries the command and the
model's card (what its checkpoint or ONNX metadata says about it).

Depends on: errors, evaluation (Scored, reliability_curves), explain (saliency), files, plots; matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core.errors import InputError
from ..core.files import atomic_write_text
from .plots import confusion_figure, gallery_figure, per_class_figure, reliability_figure
from .scores import Scored, reliability_curves

MISTAKES_PER_CLASS = 6


@dataclass
class Report:
    result: dict[str, Any]
    model: dict[str, Any]  # the model card: name, file, classes, metadata
    mistakes: list[dict[str, Any]]  # per face: true, predicted, confidence, crop, heat (or None)
    saliency_note: str = ""  # why the gallery has no maps, where it has none
    command: str = ""
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure


def most_confident_mistakes(scored: Scored, per_class: int = MISTAKES_PER_CLASS) -> list[int]:
    """Indices of the wrong predictions the model was surest of, up to `per_class` per true class."""
    wrong = np.flatnonzero(scored.predicted != scored.labels)
    chosen: list[int] = []
    for c in range(len(scored.result["class_names"])):
        mine = wrong[scored.labels[wrong] == c]
        chosen += mine[np.argsort(-scored.confidence[mine], kind="stable")[:per_class]].tolist()
    return chosen


def model_card(classifier: Any) -> dict[str, Any]:
    """What a model says about itself: from its checkpoint (weights left out) or ONNX metadata."""
    meta = (
        getattr(getattr(classifier, "loaded", None), "meta", None) or getattr(classifier, "meta", None) or {}
    )
    card = {
        "description": classifier.description,
        "file": Path(classifier.path).name,
        "classes": list(classifier.class_names),
        "tta": classifier.tta,
        "temperature": classifier.temperature,
    }
    for key in ("model", "epoch", "metrics", "val_split", "calibration", "config", "quantization", "source"):
        if meta.get(key) is not None:
            card[key] = meta[key]
    if isinstance(card.get("source"), str):  # the training machine's folders are nobody's business
        card["source"] = Path(card["source"]).name
    return card


def build_report(
    classifier: Any,
    scored: Scored,
    *,
    command: str = "",
    per_class: int = MISTAKES_PER_CLASS,
    saliency: bool = True,
) -> Report:
    """Everything the page shows, computed once; `saliency=False` leaves the maps out."""
    from ..inference.classifier import TorchClassifier

    result = scored.result
    names = result["class_names"]
    index = most_confident_mistakes(scored, per_class)
    heats: list[np.ndarray | None] = [None] * len(index)
    note = ""
    if not saliency:
        note = "saliency maps were not asked for"
    elif not isinstance(classifier, TorchClassifier):
        note = "saliency needs the PyTorch checkpoint: this model is an ONNX export"
    elif index:
        from ..inference.explain import saliency_maps

        maps, _ = saliency_maps(classifier, scored.images[index], scored.model_ids[index])
        heats = list(maps)
    mistakes = [
        {
            "true": names[int(scored.labels[i])],
            "predicted": names[int(scored.predicted[i])],
            "confidence": float(scored.confidence[i]),
            "crop": scored.images[i],
            "heat": heat,
        }
        for i, heat in zip(index, heats)
    ]
    report = Report(result, model_card(classifier), mistakes, note, command)
    report.figures = report_figures(report)
    return report


def _tile(m: dict[str, Any]) -> np.ndarray:
    from ..inference.explain import crop_panel

    if m["heat"] is None:
        import cv2

        return cv2.resize(m["crop"], (96, 96), interpolation=cv2.INTER_LINEAR)
    return crop_panel(m["crop"], m["heat"], side=96)


def report_figures(report: Report) -> dict[str, Any]:
    r = report.result
    split = r["split"]
    figures = {
        "confusion": confusion_figure(
            np.array(r["confusion_matrix"]), r["class_names"], f"{split}: accuracy {r['accuracy']:.4f}"
        ),
        "per_class": per_class_figure(r["per_class"], f"{split}: per-class scores"),
    }
    if r.get("calibration"):
        figures["reliability"] = reliability_figure(
            reliability_curves(r["calibration"]), f"{split}: reliability"
        )
    if report.mistakes:
        tiles = [
            (_tile(m), f"{m['true']} -> {m['predicted']} {m['confidence']:.2f}") for m in report.mistakes
        ]
        figures["mistakes"] = gallery_figure(
            tiles, columns=6, title="most confident mistakes (true -> predicted)"
        )
    return figures


# ----------------------------------------------------------------------------- HTML


def _png(image_or_figure: Any) -> str:
    buf = io.BytesIO()
    if isinstance(image_or_figure, np.ndarray):
        from PIL import Image

        Image.fromarray(image_or_figure).save(buf, format="PNG")
    else:
        image_or_figure.savefig(buf, dpi=100, bbox_inches="tight", format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(
    header: list[str], rows: list[list[Any]], cls: str = "", shade: list[list[float]] | None = None
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, v in enumerate(row):
            tag = "th" if c == 0 else "td"
            style = ""
            if shade is not None and c > 0:
                a = shade[r][c - 1]
                ink = "#fff" if a > 0.55 else "inherit"
                style = f' style="background: rgba(31, 111, 196, {a:.2f}); color: {ink}"'
            cells.append(f"<{tag}{style}>{_e(v)}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _metrics_rows(r: dict[str, Any]) -> list[list[Any]]:
    rows = [
        ["faces scored", r["n"]],
        ["accuracy", f"{r['accuracy']:.4f}"],
        ["macro F1", f"{r['macro_f1']:.4f}"],
        ["weighted F1", f"{r['weighted_avg']['f1']:.4f}"],
        ["test-time augmentation", r["tta"]],
    ]
    cal = r.get("calibration")
    if cal:
        for label, key in (("raw", "raw"), (f"calibrated (T={cal['temperature']:.3f})", "calibrated")):
            if key in cal:
                m = cal[key]
                rows.append(
                    [f"ECE / NLL / Brier, {label}", f"{m['ece']:.4f} / {m['nll']:.4f} / {m['brier']:.4f}"]
                )
    return rows


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       background: #f5f6f8; color: #1d2330; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.45rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
section { background: #fff; border-radius: 10px; padding: .8rem 1.1rem; margin: 1rem 0;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e1e4ea; padding: .25rem .55rem; text-align: right; }
th:first-child { text-align: left; } thead th { background: #eef0f4; }
img.figure { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: .6rem; }
.gallery figure { margin: 0; text-align: center; font-size: .82rem; }
.gallery img { width: 100%; max-width: 192px; image-rendering: auto; border-radius: 6px; }
pre { background: #0f172a; color: #e2e8f0; padding: .7rem; border-radius: 8px; overflow-x: auto;
      font-size: .8rem; }
.muted { color: #6b7280; }
"""


def _tables(r: dict[str, Any]) -> tuple[str, str, str]:
    """The confusion counts, the row-normalised matrix and the per-class table, as HTML."""
    names = r["class_names"]
    cm = np.array(r["confusion_matrix"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    top = cm.max() or 1.0
    counts = _table(
        ["true \\ predicted", *names],
        [[n, *map(int, row)] for n, row in zip(names, cm)],
        "confusion",
        (cm / top).tolist(),
    )
    normalised = _table(
        ["true \\ predicted", *names],
        [[n, *(f"{v:.2f}" for v in row)] for n, row in zip(names, norm)],
        "confusion",
        norm.tolist(),
    )
    per_class = _table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [n, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
            for n, m in r["per_class"].items()
        ]
        + [
            [f"{a} avg", *(f"{r[f'{a}_avg'][k]:.4f}" for k in ("precision", "recall", "f1")), r["n"]]
            for a in ("macro", "weighted")
        ],
        "per-class",
    )
    return counts, normalised, per_class


def _gallery(report: Report) -> str:
    tiles = "".join(
        f'<figure><img alt="{_e(m["true"])} read as {_e(m["predicted"])}" src="{_png(_tile(m))}">'
        f"<figcaption>true <b>{_e(m['true'])}</b>, read as <b>{_e(m['predicted'])}</b> "
        f"({m['confidence']:.0%})</figcaption></figure>"
        for m in report.mistakes
    )
    explain = (
        "Each face beside its Grad-CAM map of the wrongly predicted class: where the network "
        "found the evidence it acted on."
        if not report.saliency_note
        else f"No saliency: {report.saliency_note}."
    )
    return (
        f'<section id="mistakes"><h2>Most confident mistakes</h2><p>Up to {MISTAKES_PER_CLASS} per true '
        f'class, surest first. {_e(explain)}</p><div class="gallery">'
        + (tiles or "<p>No mistakes.</p>")
        + "</div></section>"
    )


def render_html(report: Report) -> str:
    r, card = report.result, report.model
    counts, normalised, per_class = _tables(r)
    figs = report.figures
    parts = [
        f"<h1>ferlab evaluation: {_e(card['file'])} on {_e(r['split'])}</h1>",
        f'<p class="muted">{_e(card["description"])} · ferlab {_e(__version__)}</p>',
        '<section id="metrics"><h2>Metrics</h2>'
        + _table(["", "value"], _metrics_rows(r), "metrics")
        + "</section>",
    ]
    if "class_mapping" in r:
        pairs = ", ".join(f"{m} → {d}" for m, d in r["class_mapping"].items())
        parts.append(
            f'<section id="mapping"><h2>Label sets</h2><p>classes mapped (model → data): {_e(pairs)}; '
            f"left out: model {_e(', '.join(r['unmapped']['model']) or 'none')}, "
            f"data {_e(', '.join(r['unmapped']['data']) or 'none')}</p></section>"
        )
    parts += [
        '<section id="confusion"><h2>Confusion matrix</h2>'
        "<p>Counts (rows: true class, columns: predicted)</p>"
        + counts
        + "<p>Row-normalised (the diagonal is each class's recall)</p>"
        + normalised
        + f'<img class="figure" alt="confusion matrices" src="{_png(figs["confusion"])}"></section>',
        '<section id="per-class"><h2>Per-class precision, recall and F1</h2>'
        + per_class
        + f'<img class="figure" alt="per-class scores" src="{_png(figs["per_class"])}"></section>',
    ]
    if "reliability" in figs:
        parts.append(
            '<section id="reliability"><h2>Reliability</h2><p>Accuracy against confidence in 15 bins: '
            "on the diagonal, a face given 80% is right 80% of the time.</p>"
            f'<img class="figure" alt="reliability diagram" src="{_png(figs["reliability"])}"></section>'
        )
    parts.append(_gallery(report))
    command = report.command or "(built from Python)"
    parts.append(
        '<section id="provenance"><h2>Command and model card</h2>'
        f"<pre>{_e(command)}</pre><pre>{_e(json.dumps(card, indent=1, default=str))}</pre></section>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ferlab evaluation: {_e(card['file'])} on {_e(r['split'])}</title>"
        f"<style>{_CSS}</style></head><body><main>" + "".join(parts) + "</main></body></html>"
    )


def check_html_path(path: str | Path) -> None:
    """Refuse a page path that cannot be written, before the scoring it would wait for."""
    from ..core.files import check_writable

    if Path(path).is_dir():
        raise InputError(f"--html {path}: a folder; give the page's file name (report.html)")
    check_writable(Path(path).absolute().parent)


def write_html(report: Report, path: str | Path) -> Path:
    """The page, written atomically (a temp file renamed into place)."""
    path = Path(path)
    atomic_write_text(path, render_html(report))
    return path


__all__ = [
    "Report",
    "build_report",
    "model_card",
    "most_confident_mistakes",
    "render_html",
    "report_figures",
    "write_html",
]
