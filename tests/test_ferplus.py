"""FER+: the vote rules, both source forms and their bad rows, soft-label training, cross-set scoring."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_MODEL, make_faces
from PIL import Image

from ferlab.core.config import ConfigError, load_config
from ferlab.core.labels import FERPLUS_EMOTIONS
from ferlab.data import (
    NOT_A_FACE,
    UNKNOWN,
    DataError,
    FerData,
    load_dataset,
    majority_labels,
    save_cache,
    vote_targets,
)
from ferlab.evaluation.scores import evaluate
from ferlab.inference.checkpoint import load_checkpoint
from ferlab.training import train
from ferlab.training.losses import multi_target_loss, supervised_loss

FERPLUS_ZIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ferplus-dev.zip"
# FER+ index of the FER2013 id that conftest's synthetic classes use (angry ... neutral).
FER_TO_PLUS = [4, 5, 6, 1, 3, 2, 0]


def votes(**counts: int) -> list[int]:
    names = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
             "unknown", "NF")
    return [counts.get(n, 0) for n in names]


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("counts, label", [
    (votes(happiness=6, neutral=4), 1),             # strict majority
    (votes(happiness=5, neutral=5), UNKNOWN),       # a tie is not a majority
    (votes(happiness=5, neutral=4, fear=1), 1),     # the single fear vote is an outlier: 5 > 4.5
    (votes(anger=4, sadness=4, fear=2), UNKNOWN),   # two-way tie with a third class
    (votes(surprise=5, fear=4), 2),                 # 9 votes in all (as in one real line)
    (votes(neutral=1, happiness=1, surprise=1, sadness=1, anger=1, disgust=1, fear=1, contempt=1,
           unknown=1, NF=1), UNKNOWN),              # every count <= 1: nothing left
    ([0] * 10, UNKNOWN),                            # no votes at all
    (votes(unknown=7, neutral=3), UNKNOWN),         # the crowd said "unknown"
    (votes(NF=8, neutral=2), NOT_A_FACE),           # not a face
    (votes(contempt=6, neutral=4), 7),              # contempt is a class of its own
])
def test_majority_rule(counts, label):
    assert majority_labels(np.array([counts]))[0] == label


def test_crossentropy_targets_keep_the_top_votes_and_drop_outliers():
    targets, keep = vote_targets(np.array([votes(happiness=6, surprise=3, neutral=1),
                                           votes(anger=4, sadness=4, fear=2),
                                           votes(unknown=6, neutral=4),
                                           votes(neutral=3, happiness=3, surprise=2, sadness=2)]),
                                 "crossentropy")
    assert keep.tolist() == [0, 1]  # no majority needed, but unknown-led and 4-way splits are dropped
    assert np.allclose(targets[0][[1, 2]], [6 / 9, 3 / 9]) and targets[0].sum() == pytest.approx(1)
    assert np.allclose(targets[1][[4, 3]], [0.5, 0.5])  # anger + sadness hold 80% of the votes


def test_multi_target_and_majority_targets():
    v = np.array([votes(happiness=6, surprise=4), votes(neutral=2, happiness=2, surprise=2, fear=2,
                                                        anger=2)])
    t, keep = vote_targets(v, "multi_target")
    assert keep.tolist() == [0] and np.allclose(t[0][[1, 2]], 0.5)
    t, keep = vote_targets(v, "majority")
    assert keep.tolist() == [0] and t[0].argmax() == 1 and t[0].max() == 1


def test_soft_label_losses():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 8), torch.randint(0, 8, (6,))
    onehot = F.one_hot(y, 8).float()
    assert torch.allclose(supervised_loss(logits, y, onehot, "crossentropy"), F.cross_entropy(logits, y))
    soft = torch.softmax(torch.randn(6, 8), 1)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(supervised_loss(logits, y, soft, "crossentropy"), expected, atol=1e-6)
    # multi-target: any acceptable answer counts; with one acceptable class it is plain CE
    assert torch.allclose(multi_target_loss(logits, onehot), F.cross_entropy(logits, y), atol=1e-6)
    both = onehot.clone()
    both[:, (y + 1) % 8] = 1
    assert (multi_target_loss(logits, both) < multi_target_loss(logits, onehot)).item()


# --------------------------------------------------------------------------- the sources


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def vote_row(label_plus: int, i: int) -> list[int]:
    v = [0] * 10
    v[label_plus] = 7 + i % 2
    v[(label_plus + 1) % 8] = 3 - i % 2
    return v


def write_ferplus_zip(path: Path, n_train: int = 140, n_valid: int = 70, extra=None) -> Path:
    x, y = make_faces(n_train + n_valid)
    with zipfile.ZipFile(path, "w") as z:
        for split, rows in (("FER2013Train", range(n_train)),
                            ("FER2013Valid", range(n_train, n_train + n_valid))):
            lines = []
            for i in rows:
                name = f"fer{i:07d}.png"
                z.writestr(f"{split}/{name}", png(x[i]))
                v = vote_row(FER_TO_PLUS[y[i]], i)
                lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, v)))
            lines += (extra or {}).get(split, [])
            z.writestr(f"{split}/label.csv", "\n".join(lines) + "\n")
    return path


def test_ferplus_layout_zip_reads_votes_labels_and_splits(tmp_path):
    data, _ = load_dataset(write_ferplus_zip(tmp_path / "fp.zip"))
    assert data.class_names == FERPLUS_EMOTIONS and data.votes.shape == (210, 10)
    assert data.split_names == ["FER2013Train", "FER2013Valid"]
    _, y = make_faces(210)
    assert data.labels.tolist() == [FER_TO_PLUS[v] for v in y]
    # FER2013 split names find the FER+ splits
    assert len(data.split("PublicTest")) == 70 and len(data.split("Training")) == 140


def test_ferplus_layout_folder_and_unlabeled_faces(tmp_path):
    folder = tmp_path / "ferplus"
    with zipfile.ZipFile(write_ferplus_zip(tmp_path / "fp.zip")) as z:
        z.extractall(folder)
    # one face whose crowd said "unknown": kept only when asked for (soft modes), counted as unknown
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / "FER2013Train" / "fer9999999.png")
    with open(folder / "FER2013Train" / "label.csv", "a") as f:
        f.write('fer9999999.png,"(0, 0, 48, 48)",3,0,0,0,0,0,0,0,7,0\n')
    assert len(load_dataset(folder)[0]) == 210
    everything, _ = load_dataset(folder, unlabeled=True)
    assert len(everything) == 211 and (everything.labels == UNKNOWN).sum() == 1


@pytest.mark.parametrize("line, message", [
    ('fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0', r"9 vote counts, expected 10"),
    ('fer0000000.png,"(0, 0, 48, 48)",4,0,x,1,3,2,0,0,0,0', r"surprise vote count 'x' is not a whole"),
    ('fer0000000.png,"(0, 0, 48, 48)",4,0,-1,1,3,2,0,0,0,0', r"surprise vote count '-1'"),
    ('fer0000000.png,"0 0 48 48",4,0,0,1,3,2,0,0,0,0', r"face box '0 0 48 48' is not"),
    ('missing.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0', r"line 141: no image 'missing.png'"),
])
def test_bad_label_lines_name_the_file_line_and_reason(tmp_path, line, message):
    archive = write_ferplus_zip(tmp_path / "fp.zip", extra={"FER2013Train": [line]})
    with pytest.raises(DataError, match=r"FER2013Train/label\.csv, line 141: ") as e:
        load_dataset(archive)
    assert e.match(message)
    data, report = load_dataset(archive, skip_bad=True)
    assert len(data) == 210 and report.skipped == 1


def test_image_without_a_label_line_is_reported(tmp_path):
    archive = write_ferplus_zip(tmp_path / "fp.zip")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("FER2013Valid/fer7777777.png", png(np.zeros((48, 48), np.uint8)))
    with pytest.raises(DataError, match=r"FER2013Valid/fer7777777\.png: image without a line"):
        load_dataset(archive)
    assert load_dataset(archive, skip_bad=True)[1].skipped == 1


def write_csv_pair(folder: Path, n: int = 56) -> tuple[Path, Path]:
    x, y = make_faces(n)
    usage = ["Training"] * (n - 14) + ["PublicTest"] * 14
    folder.mkdir(exist_ok=True)
    pixels = folder / "fer2013.csv"
    with open(pixels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for i in range(n):
            w.writerow([y[i], " ".join(map(str, x[i].ravel())), usage[i]])
    new = folder / "fer2013new.csv"
    with open(new, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                    "fear", "contempt", "unknown", "NF"])
        for i in range(n):
            name = "" if i == 3 else f"fer{i:07d}.png"  # FER+ leaves dropped faces unnamed
            w.writerow([usage[i], name, *vote_row(FER_TO_PLUS[y[i]], i)])
    return pixels, new


def test_csv_pair_is_joined_by_row_order(tmp_path):
    pixels, new = write_csv_pair(tmp_path)
    data, report = load_dataset(pixels, votes=new)
    x, y = make_faces(56)
    keep = [i for i in range(56) if i != 3]
    assert len(data) == 55 and np.array_equal(data.images, x[keep])
    assert data.labels.tolist() == [FER_TO_PLUS[y[i]] for i in keep]
    assert data.split_names == ["FER2013Train", "FER2013Valid"]
    assert "dropped 1 rows that FER+ leaves unnamed" in " ".join(report.lines())
    # a folder holding both files is the same source
    assert np.array_equal(load_dataset(tmp_path)[0].labels, data.labels)


def test_csv_pair_out_of_step_or_short_is_refused(tmp_path):
    pixels, new = write_csv_pair(tmp_path)
    rows = new.read_text().splitlines()
    shifted = rows.copy()
    shifted[10] = rows[10].replace("Training", "PublicTest", 1)
    new.write_text("\n".join(shifted) + "\n")
    with pytest.raises(DataError, match=r"fer2013new\.csv, line 11: Usage 'PublicTest' differs from "
                                        r"fer2013\.csv's 'Training'"):
        load_dataset(pixels, votes=new)
    new.write_text("\n".join(rows[:30]) + "\n")
    with pytest.raises(DataError, match=r"29 rows, but fer2013\.csv has 56: the two are joined by row order"):
        load_dataset(pixels, votes=new)


def test_cache_keeps_the_votes(tmp_path):
    data, _ = load_dataset(write_ferplus_zip(tmp_path / "fp.zip"), unlabeled=True)
    save_cache(data, tmp_path / "fp.npz")
    again, _ = load_dataset(tmp_path / "fp.npz")
    assert np.array_equal(again.votes, data.votes) and again.class_names == FERPLUS_EMOTIONS


# --------------------------------------------------------------------------- training and scoring


@pytest.fixture
def ferplus_data(tmp_path) -> FerData:
    return load_dataset(write_ferplus_zip(tmp_path / "fp.zip", 280, 140), unlabeled=True)[0]


@pytest.mark.parametrize("mode", ["crossentropy", "probability", "multi_target", "majority"])
def test_training_on_votes_learns_and_records_ferplus_classes(tmp_path, ferplus_data, mode):
    cfg = load_config(None, [*TINY_MODEL, "train.epochs=3", f"data.labels={mode}"])
    history = train(cfg, tmp_path / mode, data=ferplus_data, log=lambda _: None)
    assert history[-1]["val_accuracy"] > 0.5, history  # the synthetic classes are easy
    loaded = load_checkpoint(tmp_path / mode)
    assert tuple(loaded.class_names) == FERPLUS_EMOTIONS


def test_soft_labels_on_fer2013_data_are_refused(tmp_path, synthetic_data):
    cfg = load_config(None, [*TINY_MODEL, "train.epochs=1", "data.labels=crossentropy"])
    with pytest.raises(DataError, match="data.labels=crossentropy needs crowd votes"):
        train(cfg, tmp_path / "run", data=synthetic_data, log=lambda _: None)
    with pytest.raises(ConfigError, match="data.labels must be one of majority"):
        train(load_config(None, ["data.labels=soft"]), tmp_path / "run2", data=synthetic_data)


def test_a_fer2013_model_is_scored_on_ferplus_labels_through_the_class_mapping(tmp_path, synthetic_data,
                                                                                ferplus_data):
    train(load_config(None, [*TINY_MODEL, "train.epochs=3"]), tmp_path / "fer", data=synthetic_data,
          log=lambda _: None)
    model = load_checkpoint(tmp_path / "fer")
    native = evaluate(model, synthetic_data, "PublicTest")
    crossed = evaluate(model, ferplus_data, "FER2013Valid")
    assert crossed["class_mapping"]["happy"] == "happiness" and crossed["unmapped"]["data"] == ["contempt"]
    assert len(crossed["class_names"]) == 7 and crossed["n"] == 140
    assert crossed["accuracy"] > 0.5 and native["accuracy"] > 0.5
    # and back: a FER+ model on FER2013 labels (contempt is never predicted there)
    train(load_config(None, [*TINY_MODEL, "train.epochs=3"]), tmp_path / "plus", data=ferplus_data,
          log=lambda _: None)
    back = evaluate(load_checkpoint(tmp_path / "plus"), synthetic_data, "PublicTest")
    assert back["unmapped"]["model"] == ["contempt"] and back["accuracy"] > 0.5


# --------------------------------------------------------------------------- the real votes


def test_real_ferplus_zip_counts_match_the_official_rule():
    if not FERPLUS_ZIP.exists():
        pytest.skip(f"real FER+ data not found at {FERPLUS_ZIP} (shared/data is absent here)")
    data, _ = load_dataset(FERPLUS_ZIP, unlabeled=True)
    counts = data.class_counts()
    assert counts["FER2013Train"] == [8733, 7284, 3136, 3022, 2098, 116, 536, 120]
    assert counts["FER2013Valid"] == [1180, 862, 411, 348, 289, 25, 60, 16]
    train_labels = data.labels[data.splits == "FER2013Train"]
    assert (train_labels == UNKNOWN).sum() == 3511 and (train_labels == NOT_A_FACE).sum() == 2
    assert (data.labels[data.splits == "FER2013Valid"] == UNKNOWN).sum() == 388
    assert sorted(data.votes.sum(1).tolist()).count(9) == 1  # the one line with 9 votes


def test_cli_prepare_train_evaluate_on_ferplus(tmp_path):
    from typer.testing import CliRunner

    from ferlab.cli import app

    run = CliRunner().invoke
    pixels, new = write_csv_pair(tmp_path / "src", 112)
    out = run(app, ["prepare", str(pixels), "--votes", str(new), "-o", str(tmp_path / "fp.npz")])
    assert out.exit_code == 0, out.output
    assert "|unknown" in out.output and "FER2013Valid" in out.output and "wrote" in out.output
    out = run(app, ["train", "--data", str(tmp_path / "fp.npz"), "--out", str(tmp_path / "run"),
                    "--epochs", "1", *TINY_MODEL, "data.labels=crossentropy"])
    assert out.exit_code == 0, out.output
    assert "data.labels=crossentropy:" in out.output
    out = run(app, ["evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "fp.npz"),
                    "--split", "FER2013Valid"])
    assert out.exit_code == 0, out.output
    assert "contempt" in out.output and "split FER2013Valid" in out.output
    out = run(app, ["prepare", str(pixels), "--votes", str(tmp_path / "nope.csv"),
                    "-o", str(tmp_path / "x.npz")])
    assert out.exit_code == 2 and "nope.csv: no such file" in out.output


# --------------------------------------------------------------------------- the shipped FER+ model


def test_shipped_ferplus_model_by_name():
    from ferlab.inference.shipped import BUNDLED_FERPLUS, SAMPLE_PHOTO
    from ferlab.photos.recognizer import EmotionRecognizer

    if not BUNDLED_FERPLUS.exists():
        pytest.skip(f"no shipped FER+ model at {BUNDLED_FERPLUS}")
    assert BUNDLED_FERPLUS.stat().st_size <= 10 * 1024 * 1024
    rec = EmotionRecognizer("ferplus")
    assert rec.class_names == FERPLUS_EMOTIONS
    faces = rec.detect_emotions(SAMPLE_PHOTO)
    assert len(faces) == 1 and faces[0]["emotion"] == "happiness"


def test_shipped_ferplus_model_on_ferplus_validation(tmp_path):
    import json

    from typer.testing import CliRunner

    from ferlab.cli import app
    from ferlab.inference.shipped import BUNDLED_FERPLUS

    if not BUNDLED_FERPLUS.exists():
        pytest.skip(f"no shipped FER+ model at {BUNDLED_FERPLUS}")
    if not FERPLUS_ZIP.exists():
        pytest.skip(f"real FER+ data not found at {FERPLUS_ZIP} (shared/data is absent here)")
    out = CliRunner().invoke(app, ["evaluate", "ferplus", "--data", str(FERPLUS_ZIP),
                                   "--split", "FER2013Valid",
                                   "--json", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output.strip().splitlines()[-1])
    assert report["n"] == 3191 and report["accuracy"] >= 0.86, report["accuracy"]
