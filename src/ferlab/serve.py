"""`ferlab serve`: a FastAPI app with a JSON API and one self-contained web page.

The model loads once when the app is made; inference runs in a worker thread
(`run_in_threadpool`) so the event loop keeps answering other requests.

Hostile input: request bodies are counted as they arrive, whatever the transfer
encoding (a chunked upload without Content-Length too), and cut at the limit with
413; at most `max_concurrent` uploads are read, decoded and classified at once
(the others wait with their bytes in Starlette's disk spool), and every image goes
through the pixel cap of `preprocess.decode_image`, so memory stays bounded however
many clients send pixel bombs. No answer carries a filesystem path or an internal
repr. CORS is off unless `cors_origins` names origins; `trusted_hosts` refuses
requests for other Host headers.

    POST /api/predict  multipart `file` (an image), optional `explain=true`
                       -> {"faces": [...], "model": ..., "width", "height"}; with explain each
                       face also has "crop" and "heatmap" (a PNG data URL: the crop under
                       its Grad-CAM map of the predicted class; PyTorch models only)
    GET  /api/health   -> {"status": "ok", "model": ..., "classes": [...], "explain": bool,
                           "detector": "yunet" | "haar" | null (no detection)}
    GET  /             -> the page (upload, drag-drop or webcam snapshot; boxes, labels, bars,
                       a "show heatmap" toggle per face)
    GET  /docs         -> OpenAPI docs

Depends on: errors, recognizer (the model), preprocess (the one image decoder), explain (heatmaps),
processes (workers end with the parent);
FastAPI, uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from . import __version__
from .core.errors import InputError
from .core.processes import die_with_parent
from .data.preprocess import ImageError, as_rgb_array, decode_cost
from .photos.recognizer import EmotionRecognizer

PAGE = Path(__file__).parent / "static" / "index.html"
DEFAULT_MAX_UPLOAD_MB = 10.0
# Memory all the uploads being decoded at once may take, estimated from each image's header
# before it is decoded (preprocess.decode_cost): a 300 KB PNG can decode to 40 megapixels
# of 16-bit RGBA, ~760 MB at its peak. Requests wait for their share; an image that needs
# more than all of it alone is refused (413). 128 MB: any JPEG (its luma, downscaled over
# the pixel cap), PNGs of up to ~6 megapixels in colour or ~33 in gray.
DEFAULT_DECODE_BUDGET_MB = 128.0
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


class BodyTooLarge(HTTPException):
    """Raised from inside the body stream; FastAPI passes HTTPExceptions through as answers."""

    def __init__(self, max_upload_mb: float):
        super().__init__(413, f"upload larger than {max_upload_mb:g} MB")


class BodyLimit:
    """ASGI middleware: refuse a declared Content-Length over the limit at once, and count
    the bytes of every body as they arrive, so a chunked or lying client is cut at the limit."""

    def __init__(self, app, limit: int, max_upload_mb: float):
        self.app, self.limit, self.max_upload_mb = app, limit, max_upload_mb

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isascii() and length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": f"upload larger than {self.max_upload_mb:g} MB"}, 413)
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.max_upload_mb)
            return message

        await self.app(scope, counted, send)


class DecodeBudget:
    """At most `total` bytes of decoding in flight: each request holds its estimated cost."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._free = asyncio.Condition()

    @classmethod
    def megabytes(cls, mb: float) -> DecodeBudget:
        if not mb > 0:
            raise InputError(f"--decode-budget-mb must be a positive number of megabytes, got {mb}")
        return cls(int(mb * 1024 * 1024))

    @contextlib.asynccontextmanager
    async def hold(self, cost: int):
        async with self._free:
            await self._free.wait_for(lambda: self.used + cost <= self.total)
            self.used += cost
        try:
            yield
        finally:
            async with self._free:
                self.used -= cost
                self._free.notify_all()


def public_description(classifier: Any) -> str:
    """The model's one-line description without the folder it was loaded from."""
    path = Path(classifier.path)
    return classifier.description.replace(str(path), path.name)


def create_app(
    model: str | Path | None = None,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    device: str = "auto",
    recognizer: Any = None,
    max_concurrent: int | None = None,
    cors_origins: Sequence[str] = (),
    trusted_hosts: Sequence[str] = (),
    detector: str = "auto",
    decode_budget_mb: float = DEFAULT_DECODE_BUDGET_MB,
) -> FastAPI:
    """Build the app around one recognizer (loaded here, once). The recognizer's face
    detector is shared by the request threads (both backends are thread-safe)."""
    if not max_upload_mb > 0:
        raise InputError(f"--max-upload-mb must be a positive number of megabytes, got {max_upload_mb}")
    # One thread per image and one image per core in flight (`slots`): no oversubscription.
    recognizer = recognizer or EmotionRecognizer(model, device=device, threads=1, detector=detector)
    limit = int(max_upload_mb * 1024 * 1024)
    description = public_description(recognizer.classifier)
    # One decode + classification per core at a time: more would only queue inside torch,
    # each holding a decoded image in memory.
    slots = asyncio.Semaphore(max_concurrent or os.cpu_count() or 2)
    budget = DecodeBudget.megabytes(decode_budget_mb)
    app = FastAPI(title="ferlab", version=__version__,
                  description="Facial expression recognition: faces and their emotions in a photo.")
    app.add_middleware(BodyLimit, limit=limit + MULTIPART_OVERHEAD, max_upload_mb=max_upload_mb)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    if trusted_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(trusted_hosts))

    explainable = recognizer.can_explain

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": description, "classes": list(recognizer.class_names),
                "temperature": recognizer.classifier.temperature, "explain": explainable,
                "detector": recognizer.detector_name,
                "version": __version__}

    @app.post("/api/predict")
    async def predict(
        file: UploadFile = File(..., description="a photo (jpg, png, webp, bmp, ...)"),
        explain: bool = Form(False, description="also return each face's saliency heatmap"),
    ):
        if explain and not explainable:
            raise HTTPException(400, "explain needs a PyTorch model; this server runs an ONNX export")
        if not (file.content_type or "").startswith("image/"):
            raise HTTPException(415, f"expected an image upload, got {file.content_type or 'no type'}")
        async with slots:
            data = await file.read(limit + 1)
            if len(data) > limit:
                raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
            cost = _decode_cost(data, file)
            if cost > budget.total:
                raise HTTPException(413, f"{_name(file)}: decoding it takes about {cost / 2**20:,.0f} MB, "
                                         f"over this server's decode budget of {decode_budget_mb:g} MB "
                                         "(--decode-budget-mb); send a JPEG or a smaller image")
            async with budget.hold(cost):
                rgb = await _decode(data, file)
                del data
                if explain:
                    faces = await run_in_threadpool(explained_faces, recognizer, rgb)
                else:
                    faces = await run_in_threadpool(recognizer.detect_emotions, rgb)
        return {"faces": faces, "model": description, "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0])}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    return app


def _decode_cost(data: bytes, file: UploadFile) -> int:
    try:
        return decode_cost(data)
    except ImageError as e:  # ours: names the size and the limit, nothing internal
        raise HTTPException(400, f"{_name(file)}: {e}") from e
    except Exception as e:  # PIL raises several types, with reprs inside: not for clients
        raise HTTPException(400, f"cannot decode {_name(file)} as an image "
                                 "(unsupported format or corrupt data)") from e


async def _decode(data: bytes, file: UploadFile):
    try:
        # Gray is all detection, classification and heatmaps use: a JPEG decodes its
        # luma only, about a third of the decode time.
        return await run_in_threadpool(as_rgb_array, data, None, True)
    except ImageError as e:
        raise HTTPException(400, f"{_name(file)}: {e}") from e
    except Exception as e:
        raise HTTPException(400, f"cannot decode {_name(file)} as an image "
                                 "(unsupported format or corrupt data)") from e


def explained_faces(recognizer: Any, rgb) -> list[dict[str, Any]]:
    """detect_emotions plus each face's heatmap (crop under its map) as a PNG data URL."""
    from .inference.explain import crop_overlay
    from .photos.faces import to_gray

    faces = recognizer.explain(rgb)
    gray = to_gray(rgb)
    for face in faces:
        x, y, w, h = face["crop"]
        heat = face.pop("saliency")[face["emotion"]]
        face["heatmap"] = png_data_url(crop_overlay(gray[y : y + h, x : x + w], heat))
    return faces


def png_data_url(rgb) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _name(file: UploadFile) -> str:
    """The upload's own file name, for messages: its last part only, printable, short."""
    name = Path(file.filename or "").name
    name = "".join(c for c in name if c.isprintable())[:80]
    return repr(name) if name else "the upload"


def check_port(host: str, port: int) -> None:
    """Bind once before the app starts, so a bad port is one clear message, not a traceback."""
    if not 0 < port < 65536:
        raise InputError(f"--port must be 1-65535, got {port}")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except socket.gaierror as e:
        raise InputError(f"cannot listen on {host}:{port}: unknown host ({e.strerror})") from e
    except OSError as e:
        why = {errno.EADDRINUSE: "the port is already in use", errno.EACCES: "the port needs more privileges",
               errno.EADDRNOTAVAIL: "the host is not an address of this machine"}.get(e.errno, e.strerror)
        raise InputError(f"cannot listen on {host}:{port}: {why}") from e


SETTINGS_ENV = "FERLAB_SERVE_SETTINGS"  # how `serve --workers N` hands its settings to each worker


def serve(model: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, device: str = "auto",
          decode_budget_mb: float = DEFAULT_DECODE_BUDGET_MB,
          recognizer: Any = None, cors_origins: Sequence[str] = (),
          trusted_hosts: Sequence[str] = (), workers: int = 1,
          recognizer_options: dict[str, Any] | None = None) -> None:
    """Run the server. One worker serves `recognizer` (or loads `model`); with `workers` > 1
    uvicorn starts that many processes, each loading the model itself with its share of
    the cores (so they do not fight over them) and one image in flight at a time."""
    check_port(host, port)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        app = create_app(model, max_upload_mb=max_upload_mb, device=device, recognizer=recognizer,
                         decode_budget_mb=decode_budget_mb,
                         cors_origins=cors_origins, trusted_hosts=trusted_hosts)
        uvicorn.run(app, host=host, port=port)
        return
    threads = max(1, (os.cpu_count() or 2) // workers)
    options = {**(recognizer_options or {}), "device": device, "threads": threads}
    os.environ[SETTINGS_ENV] = json.dumps({
        "model": None if model is None else str(model), "recognizer": options,
        "max_upload_mb": max_upload_mb, "cors_origins": list(cors_origins),
        "decode_budget_mb": decode_budget_mb / workers,
        "trusted_hosts": list(trusted_hosts), "max_concurrent": 1, "parent": os.getpid()})
    uvicorn.run("ferlab.serve:app_from_settings", factory=True, host=host, port=port, workers=workers)


def app_from_settings() -> FastAPI:
    """The app of one `serve --workers N` worker process, from the settings its parent left."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    die_with_parent(settings["parent"])  # a parent killed with -9 must not leave us on the port
    recognizer = EmotionRecognizer(settings["model"], **settings["recognizer"])
    return create_app(recognizer=recognizer, max_upload_mb=settings["max_upload_mb"],
                      decode_budget_mb=settings["decode_budget_mb"],
                      max_concurrent=settings["max_concurrent"], cors_origins=settings["cors_origins"],
                      trusted_hosts=settings["trusted_hosts"])
