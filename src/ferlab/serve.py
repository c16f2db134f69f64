"""`ferlab serve`: a FastAPI app with a JSON API and one self-contained web page.

The model loads once when the app is made; inference runs in a worker thread
(`run_in_threadpool`) so the event loop keeps answering other requests.

    POST /api/predict  multipart `file` (an image) -> {"faces": [...], "model": ..., "width", "height"}
    GET  /api/health   -> {"status": "ok", "model": ..., "classes": [...]}
    GET  /             -> the page (upload, drag-drop or webcam snapshot; boxes, labels, bars)
    GET  /docs         -> OpenAPI docs

Depends on: recognizer (the model), preprocess (the one image decoder); FastAPI, uvicorn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from . import __version__
from .preprocess import as_rgb_array
from .recognizer import EmotionRecognizer

PAGE = Path(__file__).parent / "static" / "index.html"
DEFAULT_MAX_UPLOAD_MB = 10.0


def create_app(
    model: str | Path | None = None,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    device: str = "auto",
    recognizer: Any = None,
) -> FastAPI:
    """Build the app around one recognizer (loaded here, once)."""
    recognizer = recognizer or EmotionRecognizer(model, device=device)
    limit = int(max_upload_mb * 1024 * 1024)
    description = recognizer.classifier.description
    app = FastAPI(title="ferlab", version=__version__,
                  description="Facial expression recognition: faces and their emotions in a photo.")

    @app.middleware("http")
    async def reject_large_bodies(request: Request, call_next):
        # Refuse before reading the body when the client says how big it is.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 64 * 1024:
            return JSONResponse({"detail": f"upload larger than {max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": description, "classes": list(recognizer.class_names),
                "version": __version__}

    @app.post("/api/predict")
    async def predict(file: UploadFile = File(..., description="a photo (jpg, png, webp, bmp, ...)")):
        if not (file.content_type or "").startswith("image/"):
            raise HTTPException(415, f"expected an image upload, got {file.content_type or 'no type'}")
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
        try:
            rgb = await run_in_threadpool(as_rgb_array, data)
        except Exception as e:  # PIL raises several types for undecodable data
            raise HTTPException(400, f"cannot decode {file.filename or 'the upload'} as an image: {e}") from e
        faces = await run_in_threadpool(recognizer.detect_emotions, rgb)
        return {"faces": faces, "model": description, "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0])}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    return app


def serve(model: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, device: str = "auto",
          recognizer: Any = None) -> None:
    app = create_app(model, max_upload_mb=max_upload_mb, device=device, recognizer=recognizer)
    uvicorn.run(app, host=host, port=port)
