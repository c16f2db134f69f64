"""`ferlab serve`: API cases through TestClient, and the page driven in headless Chromium."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_MODEL, child_pids, make_data, running
from fastapi.testclient import TestClient
from PIL import Image

from ferlab.core.config import load_config
from ferlab.inference.shipped import SAMPLE_PHOTO
from ferlab.serve import create_app
from ferlab.training import train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(load_config(None, [*TINY_MODEL, "train.epochs=1"]), run, data=make_data(), log=lambda _: None)
    return run


@pytest.fixture(scope="module")
def client(model_dir):
    return TestClient(create_app(model_dir, max_upload_mb=0.5))


def png(size=(120, 90), colour=(90, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_health(client):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["classes"][3] == "happy"


def test_predict_face_photo(client):
    files = {"file": ("astronaut.jpg", SAMPLE_PHOTO.read_bytes(), "image/jpeg")}
    response = client.post("/api/predict", files=files)
    assert response.status_code == 200
    body = response.json()
    assert len(body["faces"]) == 1 and (body["width"], body["height"]) == (512, 512)
    face = body["faces"][0]
    assert len(face["box"]) == 4 and face["emotion"] in face["probabilities"]
    assert "model" in body


def test_explain_field_adds_heatmaps_and_onnx_servers_refuse_it(client, tmp_path):
    import base64

    photo = SAMPLE_PHOTO.read_bytes()
    plain = client.post("/api/predict", files={"file": ("a.jpg", photo, "image/jpeg")}).json()
    assert "heatmap" not in plain["faces"][0]  # opt-in: no cost unless asked
    body = client.post("/api/predict", files={"file": ("a.jpg", photo, "image/jpeg")},
                       data={"explain": "true"}).json()
    face = body["faces"][0]
    assert face["emotion"] == plain["faces"][0]["emotion"] and len(face["crop"]) == 4
    assert face["heatmap"].startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(face["heatmap"].split(",", 1)[1])))
    assert image.size == (192, 192) and image.mode == "RGB"
    assert client.get("/api/health").json()["explain"] is True
    onnx = TestClient(create_app("fast-int8"))
    assert onnx.get("/api/health").json()["explain"] is False
    r = onnx.post("/api/predict", files={"file": ("a.jpg", photo, "image/jpeg")}, data={"explain": "true"})
    assert r.status_code == 400 and "needs a PyTorch model" in r.json()["detail"]


def test_no_face_is_an_empty_list(client):
    response = client.post("/api/predict", files={"file": ("sky.png", png(), "image/png")})
    assert response.status_code == 200 and response.json()["faces"] == []


def test_not_an_image_type_is_415(client):
    response = client.post("/api/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert response.status_code == 415 and "expected an image" in response.json()["detail"]


def test_undecodable_image_is_400(client):
    response = client.post("/api/predict", files={"file": ("broken.jpg", b"\xff\xd8 nope", "image/jpeg")})
    assert response.status_code == 400 and "cannot decode 'broken.jpg'" in response.json()["detail"]


def test_too_large_is_413(client):
    import numpy as np

    big = png(size=(1400, 1400), colour=(10, 10, 10))  # large picture, small file: accepted
    noise = np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)
    noisy = io.BytesIO()
    Image.fromarray(noise).save(noisy, "PNG")
    assert len(noisy.getvalue()) > 0.5 * 1024 * 1024
    response = client.post("/api/predict", files={"file": ("big.png", noisy.getvalue(), "image/png")})
    assert response.status_code == 413
    assert client.post("/api/predict", files={"file": ("ok.png", big, "image/png")}).status_code == 200


def test_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "Choose a photo" in page.text and "/api/predict" in page.text
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_in_headless_chromium(model_dir, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model_dir), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 390, "height": 844})  # phone-sized
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#file", str(SAMPLE_PHOTO))
            page.wait_for_selector(".face .emotion", timeout=30_000)
            label = page.inner_text(".face .emotion")
            assert label.startswith("Face 1: ")
            assert label.split(": ")[1] in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
            assert "1 face(s) found" in page.inner_text("#status")
            assert page.eval_on_selector("#canvas", "c => c.width") == 512
            page.check(".face label.heat input")  # the first tick asks the server for heatmaps
            page.wait_for_selector(".face img.heatmap:not([hidden])", timeout=30_000)
            src = page.get_attribute(".face img.heatmap", "src")
            assert src.startswith("data:image/png;base64,")
            assert page.eval_on_selector(".face img.heatmap", "i => i.complete && i.naturalWidth") == 192
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to list workers")
def test_workers_serve_from_separate_processes_and_bad_counts_are_refused():
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "ferlab", "serve", "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stderr.read()
                assert time.time() < deadline, "server did not start"
                time.sleep(0.5)
        assert "int8" in health["model"] and health["explain"] is True
        photo = SAMPLE_PHOTO.read_bytes()
        for _ in range(4):
            r = httpx.post(f"http://127.0.0.1:{port}/api/predict", timeout=30,
                           files={"file": ("a.jpg", photo, "image/jpeg")})
            assert r.status_code == 200 and r.json()["faces"][0]["emotion"] == "happy"
        # kill -9 of the parent: its workers must not go on serving the port
        workers = child_pids(server.pid)
        assert len(workers) >= 2, workers
        server.kill()
        server.wait(timeout=30)
        deadline = time.time() + 20
        while any(running(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(running(pid) for pid in workers), "workers outlived their killed parent"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    from typer.testing import CliRunner

    from ferlab.cli import app

    r = CliRunner().invoke(app, ["serve", "--workers", "0"])
    assert r.exit_code == 2 and "--workers must be >= 1" in r.output


def test_health_names_the_detector_and_concurrent_requests_get_the_same_faces(model_dir):
    """Six clients at once through one app (one event loop, as under uvicorn): the request
    threads share the recognizer's detector and every answer has the same face."""
    from ferlab.photos.detection.yunet import unavailable_reason

    expected = "haar" if unavailable_reason() else "yunet"
    photo = SAMPLE_PHOTO.read_bytes()
    boxes: list = []
    with TestClient(create_app(model_dir)) as app_client:
        assert app_client.get("/api/health").json()["detector"] == expected

        def work():
            for _ in range(3):
                response = app_client.post("/api/predict", files={"file": ("a.jpg", photo, "image/jpeg")})
                ok = response.status_code == 200
                boxes.append([f["box"] for f in response.json()["faces"]] if ok else None)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert len(boxes) == 18 and boxes[0] is not None and len(boxes[0]) == 1
    assert all(b == boxes[0] for b in boxes)
    haar = TestClient(create_app(model_dir, detector="haar"))
    assert haar.get("/api/health").json()["detector"] == "haar"
