"""Photos, folders, videos and ONNX through the recognizer and `ferlab predict`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_MODEL, make_data, make_faces
from PIL import Image
from typer.testing import CliRunner

from ferlab.cli import app
from ferlab.core.config import load_config
from ferlab.inference.checkpoint import load_checkpoint
from ferlab.inference.export import export_onnx
from ferlab.inference.shipped import SAMPLE_PHOTO
from ferlab.photos.recognizer import EmotionRecognizer
from ferlab.training import train

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(None, [*TINY_MODEL, "train.epochs=2", "train.tta=flip"])
    train(cfg, run, data=make_data(), log=lambda _: None)
    return run


def test_sample_photo_has_one_face(model_dir):
    faces = EmotionRecognizer(model_dir).detect_emotions(SAMPLE_PHOTO)
    assert len(faces) == 1
    x, y, w, h = faces[0]["box"]
    assert 150 < x < 210 and 40 < y < 100 and 70 < w < 130  # around her face, not the helmet
    assert abs(sum(faces[0]["probabilities"].values()) - 1) < 1e-4


def test_inputs_as_numpy_pil_and_path_agree(model_dir):
    rec = EmotionRecognizer(model_dir)
    image = Image.open(SAMPLE_PHOTO)
    a = rec.detect_emotions(SAMPLE_PHOTO)
    b = rec.detect_emotions(image)
    c = rec.detect_emotions(np.asarray(image))
    assert b == c
    # A JPEG path decodes its stored luma; the array's gray is re-computed from decoded RGB,
    # a level or two apart: the same faces, probabilities within a fraction of a percent.
    assert [(f["box"], f["emotion"]) for f in a] == [(f["box"], f["emotion"]) for f in b]
    for fa, fb in zip(a, b):
        assert max(abs(fa["probabilities"][k] - fb["probabilities"][k]) for k in fa["probabilities"]) < 0.01


def test_exif_orientation_is_honoured(model_dir, tmp_path):
    upright = Image.open(SAMPLE_PHOTO)
    rotated = upright.rotate(90, expand=True)  # stored sideways (turned 90 degrees anticlockwise)...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag that tells viewers to turn it 90 degrees clockwise
    rotated.save(tmp_path / "sideways.jpg", exif=exif)
    rec = EmotionRecognizer(model_dir)
    assert len(rec.detect_emotions(tmp_path / "sideways.jpg")) == 1
    rotated.save(tmp_path / "no_tag.jpg")
    assert rec.detect_emotions(tmp_path / "no_tag.jpg") == []  # the frontal detector needs upright faces


def test_no_detect_treats_images_as_crops(model_dir):
    x, _ = make_faces(3)
    faces = EmotionRecognizer(model_dir, detect=False).classify_crops(list(x))
    assert len(faces) == 3 and faces[0]["box"] == [0, 0, 48, 48]


def test_predict_cli_photos_folder_no_face_and_errors(model_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(SAMPLE_PHOTO).save(photos / "astronaut.webp")
    Image.open(SAMPLE_PHOTO).convert("L").save(photos / "gray.bmp")
    Image.new("RGB", (200, 150), (90, 120, 200)).save(photos / "sky.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    annotated = tmp_path / "annotated"
    result = runner.invoke(app, ["predict", str(model_dir), str(photos), str(tmp_path / "broken.jpg"),
                                 str(tmp_path / "nothing*.png"), "--json", "--annotate", str(annotated)])
    assert result.exit_code == 1  # two inputs failed, the others ran
    assert "broken.jpg" in result.output and "nothing*.png: no such file" in result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    by_name = {p["source"].split("/")[-1]: p["faces"] for p in payload["photos"]}
    assert len(by_name["astronaut.webp"]) == 1 and len(by_name["gray.bmp"]) == 1
    assert by_name["sky.png"] == []
    assert sorted(p.name for p in annotated.iterdir()) == [
        "astronaut_annotated.png", "gray_annotated.png", "sky_annotated.png"]
    table = runner.invoke(app, ["predict", str(model_dir), str(photos / "sky.png")])
    assert table.exit_code == 0 and "no face found" in table.output
    as_csv = runner.invoke(app, ["predict", str(model_dir), str(photos / "astronaut.webp"), "--csv"])
    rows = list(csv.DictReader(as_csv.output.splitlines()))
    assert len(rows) == 1 and rows[0]["emotion"] in rows[0] and float(rows[0]["happy"]) >= 0


def test_same_file_name_in_two_folders_gives_two_annotated_copies(model_dir, tmp_path):
    for folder, colour in (("a", (200, 40, 40)), ("b", (40, 40, 200))):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (120, 90), colour).save(tmp_path / folder / "photo.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(model_dir), str(tmp_path / "a" / "photo.png"),
                                 str(tmp_path / "b" / "photo.png"), "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["photo-2_annotated.png", "photo_annotated.png"]
    reds = [np.asarray(Image.open(out / n))[..., 0].mean() for n in reversed(names)]
    assert reds[0] > 150 > reds[1]  # each copy shows its own photo (a's red, then b's blue)


@pytest.mark.parametrize("detector", ["yunet", "haar"])
def test_video_every_nth_frame_csv_and_annotated_copy(model_dir, tmp_path, detector):
    import cv2

    from ferlab.photos.detection.yunet import unavailable_reason

    if detector == "yunet" and unavailable_reason():
        pytest.skip(f"YuNet cannot run here: {unavailable_reason()}")
    frame = cv2.cvtColor(np.asarray(Image.open(SAMPLE_PHOTO).resize((256, 256))), cv2.COLOR_RGB2BGR)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(10):
        writer.write(np.roll(frame, i, axis=1))
    writer.release()
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(model_dir), str(video), "--every", "3",
                                 "--video-dir", str(out), "--annotate", str(out), "--detector", detector])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "clip_faces.csv").open()))
    assert [int(r["frame"]) for r in rows] == [0, 3, 6, 9]
    assert {r["track"] for r in rows} == {"1"}  # one face, one track across the frames
    capture = cv2.VideoCapture(str(out / "clip_annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert "4 of 10 frames, 4 faces in 1 track(s)" in result.output
    timeline = Image.open(out / "clip_timeline.png")
    assert timeline.size[0] > 300 and np.asarray(timeline.convert("L")).std() > 10


def test_onnx_matches_pytorch_within_1e4(model_dir, tmp_path):
    loaded = load_checkpoint(model_dir)
    path = export_onnx(loaded, tmp_path / "model.onnx")
    torch_rec = EmotionRecognizer(model_dir, detect=False, device="cpu", precision="fp32")
    onnx_rec = EmotionRecognizer(path, detect=False)
    x, _ = make_faces(37, seed=3)  # not a multiple of anything: the batch axis is dynamic
    a = torch_rec.classifier.predict_proba(x)
    b = onnx_rec.classifier.predict_proba(x)
    assert a.shape == b.shape == (37, 7)
    assert np.abs(a - b).max() < 1e-4
    assert onnx_rec.classifier.tta == "flip" and onnx_rec.class_names == loaded.class_names
    cli = runner.invoke(app, ["predict", str(path), str(SAMPLE_PHOTO), "--json"])
    assert cli.exit_code == 0 and json.loads(cli.output)["photos"][0]["faces"]


def test_export_cli(model_dir, tmp_path):
    result = runner.invoke(app, ["export", str(model_dir), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0 and (tmp_path / "m.onnx").exists()


def test_bad_model_or_option_is_one_clear_line(tmp_path):
    for args in (["demo", "--model", str(tmp_path / "nope.pt")],
                 ["predict", str(tmp_path / "nope.pt"), str(SAMPLE_PHOTO)],
                 ["serve", "--model", str(tmp_path / "nope.pt")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "nope.pt: no such checkpoint" in result.output, args
    result = runner.invoke(app, ["predict", str(SAMPLE_PHOTO), "--tta", "bogus"])
    assert result.exit_code == 2 and "tta must be one of none, flip, tencrop" in result.output


def test_int8_export_keeps_predictions_and_labels(model_dir, tmp_path):
    cache = tmp_path / "calib.npz"
    from ferlab.data import save_cache

    save_cache(make_data(), cache)
    result = runner.invoke(app, ["export", str(model_dir), "-o", str(tmp_path / "q.onnx"), "--int8",
                                 "--calibration-data", str(cache), "--calibration-images", "100"])
    assert result.exit_code == 0, result.output
    assert "calibrated on 100 faces" in result.output
    fp32 = EmotionRecognizer(model_dir, detect=False, device="cpu", precision="fp32").classifier
    q = EmotionRecognizer(tmp_path / "q.onnx", detect=False).classifier
    assert "int8" in q.description and q.class_names == fp32.class_names and q.tta == "flip"
    x, _ = make_faces(64, seed=5)
    a, b = fp32.predict_proba(x), q.predict_proba(x)
    assert np.abs(a - b).max() < 0.1  # quantization error, not a different model
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    ev = runner.invoke(app, ["evaluate", str(tmp_path / "q.onnx"), "--data", str(cache), "--json",
                             "--split", "PublicTest"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output.strip().splitlines()[-1])["n"] == 140
    missing = runner.invoke(app, ["export", str(model_dir), "-o", str(tmp_path / "x.onnx"), "--int8"])
    assert missing.exit_code == 2 and "needs --calibration-data" in missing.output
    assert not (tmp_path / "x.onnx").exists()
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    for name in ("absent.onnx", "broken.onnx"):
        bad = runner.invoke(app, ["evaluate", str(tmp_path / name), "--data", str(cache)])
        assert bad.exit_code == 2 and name in bad.output and "Traceback" not in bad.output, bad.output


# --------------------------------------------------------------------------- the light default path


def test_numpy_tta_views_match_the_torch_ones():
    import torch

    from ferlab.inference.tta import tta_views

    x = np.random.default_rng(0).normal(size=(3, 1, 48, 48)).astype(np.float32)
    for mode in ("none", "flip", "tencrop"):
        ours, ref = tta_views(x, mode), tta_views(torch.from_numpy(x), mode)
        assert len(ours) == len(ref)
        assert max(float(np.abs(a - b.numpy()).max()) for a, b in zip(ours, ref)) < 1e-4, mode


def test_default_prediction_runs_the_int8_export_without_importing_torch():
    code = ("import sys; from ferlab import EmotionRecognizer; "
            "from ferlab.inference.shipped import SAMPLE_PHOTO; "
            "r = EmotionRecognizer(); faces = r.detect_emotions(SAMPLE_PHOTO); "
            "print(r.classifier.path.name, len(faces), faces[0]['emotion'], 'torch' in sys.modules, "
            "r.can_explain)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = run.stdout.split()
    assert out == ["ferlab-fer2013-ensemble-int8.onnx", "1", "happy", "False", "True"]


def test_int8_default_explains_through_its_pytorch_twin():
    from ferlab.inference.shipped import BUNDLED_ENSEMBLE, BUNDLED_MODEL, SAMPLE_PHOTO
    from ferlab.photos.recognizer import EmotionRecognizer

    rec = EmotionRecognizer()
    faces = rec.explain(SAMPLE_PHOTO)
    assert rec.saliency_classifier.path == BUNDLED_ENSEMBLE  # each member's map, summed
    assert len(faces) == 1 and faces[0]["saliency"]["happy"].shape == (48, 48)
    # A device or exact precision named: the PyTorch checkpoint itself.
    assert EmotionRecognizer(precision="fp32").classifier.path == BUNDLED_ENSEMBLE
    assert EmotionRecognizer("bundled-int8").saliency_classifier.path == BUNDLED_MODEL


def test_a_run_folder_holding_only_model_pt_is_taken_as_the_model(tmp_path):
    """Every resolver reads one list (shipped.RUN_FOLDER_MODELS): `predict run/ photo.jpg`
    with only model.pt in run/ used to treat the folder as photos and use the default model."""
    import shutil

    from ferlab.inference.checkpoint import resolve_checkpoint
    from ferlab.inference.shipped import BUNDLED_FAST
    from ferlab.photos.predict import split_model_argument

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(BUNDLED_FAST, run / "model.pt")
    assert split_model_argument([str(run), "a.jpg"]) == (str(run), ["a.jpg"])
    assert resolve_checkpoint(run) == run / "model.pt"
    (tmp_path / "photos").mkdir()
    assert split_model_argument([str(tmp_path / "photos")]) == (None, [str(tmp_path / "photos")])
