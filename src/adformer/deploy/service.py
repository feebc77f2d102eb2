"""The HTTP service: FastAPI over an ONNX export (torch-free) or a fitted run (PyTorch).

    GET  /health/live    the process answers
    GET  /health/ready   the model is loaded (503 until then, or with the error if it failed)
    GET  /v1/model       method, categories, image size, thresholds, version
    POST /v1/predict     multipart: `image` (repeat it for several), optional `category`,
                         `maps` (default true: the map and overlay as base64 PNG)
    GET  /               the page: drop images, see maps and decisions, move the threshold
    GET  /docs           OpenAPI

Bad input is a 4xx with a message and the service stays up: not an image 415, too large
413 (bytes per request, or decoded pixels: a decompression bomb), unknown category 404.

>>> app = create_app("exports/uniad")  # doctest: +SKIP
>>> serve("exports/uniad", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from adformer import __version__
from adformer.data.images import ImageTooLarge, decode_image, write_png
from adformer.deploy.models import open_models
from adformer.errors import AdformerError
from adformer.evaluation.visualize import heatmap, overlay

MAX_UPLOAD_MB = 20.0
MAX_PIXELS = 64_000_000  # decoded pixels per image (an 8,000 × 8,000 image)
OVERLAY_SIDE = 1024  # longest side of the returned overlay
ENVIRONMENT = "ADFORMER_SERVE"  # how `serve --workers N` hands its settings to each worker


class _State:
    """The model of one worker process, loaded in the background so that liveness answers
    at once and readiness says when predictions can be made."""

    def __init__(self, source, backend: str, device):
        self.source, self.backend, self.device = source, backend, device
        self.models = None
        self.error: str | None = None
        self.lock = threading.Lock()  # one prediction at a time: the backends use every core

    def load(self) -> None:
        try:
            self.models = open_models(self.source, self.backend, self.device)
        except Exception as error:  # reported by /health/ready, never a dead worker
            self.error = f"{type(error).__name__}: {error}"

    def ready(self):
        if self.models is None:
            detail = f"model failed to load: {self.error}" if self.error else "model loading"
            raise HTTPException(503, detail)
        return self.models


def create_app(
    source: str | Path,
    *,
    backend: str = "auto",
    device=None,
    max_upload_mb: float = MAX_UPLOAD_MB,
    max_pixels: int = MAX_PIXELS,
) -> FastAPI:
    """The service for a run or an export (`source`); the model loads when the app starts."""
    state = _State(source, backend, device)
    max_bytes = int(max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=state.load, daemon=True).start()
        yield

    app = FastAPI(
        title="adformer",
        version=__version__,
        description="Anomaly scores and maps for images, from an adformer model.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            return JSONResponse(
                {"detail": f"request of {int(length)} bytes; the limit is {max_bytes}"}, 413
            )
        return await call_next(request)

    @app.get("/health/live")
    def live() -> dict:
        return {"status": "alive"}

    @app.get("/health/ready")
    def ready() -> dict:
        state.ready()
        return {"status": "ready"}

    @app.get("/v1/model")
    def model_info() -> dict:
        models = state.ready()
        return {
            "method": models.method,
            "image_size": models.image_size,
            "categories": models.categories,
            "thresholds": {c: models.model(c).threshold_ for c in models.categories},
            "backend": models.backend,
            "version": __version__,
            "max_upload_bytes": max_bytes,
        }

    @app.post("/v1/predict")
    def predict(
        image: Annotated[list[UploadFile], File(description="one or more images")],
        category: Annotated[str | None, Form(description="which model (per-category)")] = None,
        maps: Annotated[bool, Form(description="include the map and overlay as PNG")] = True,
    ) -> dict:
        models = state.ready()
        if category is not None and category not in models.categories:
            raise HTTPException(
                404, f"unknown category '{category}': {', '.join(models.categories)}"
            )
        try:
            model = models.model(category)
        except AdformerError as error:
            raise HTTPException(422, str(error)) from error
        decoded = []
        total = 0
        for upload in image:
            data = upload.file.read(max_bytes + 1 - total)
            total += len(data)
            if total > max_bytes:
                raise HTTPException(413, f"the images exceed the limit of {max_bytes} bytes")
            decoded.append(_decode(upload.filename or "image", data, max_pixels))
        with state.lock:
            prediction = model.predict(decoded)
        results = []
        for upload, picture, score, flag, amap in zip(
            image, decoded, prediction.scores, prediction.anomalous, prediction.maps, strict=True
        ):
            result = {
                "filename": upload.filename,
                "score": float(score),
                "threshold": float(model.threshold_),
                "anomalous": bool(flag),
                "map_low": float(model.map_low_),
            }
            if maps:
                low, high = model.map_low_, model.threshold_
                side = models.image_size
                result["map"] = _png(heatmap(amap, low, high, (side, side)))
                shown = picture.copy()
                shown.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE))
                result["overlay"] = _png(overlay(shown, amap, low, high))
            results.append(result)
        return {"method": models.method, "category": category, "results": results}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("adformer.deploy").joinpath("page.html").read_text("utf-8")

    app.state.adformer = state
    return app


def _decode(name: str, data: bytes, max_pixels: int) -> Image.Image:
    """Uploaded bytes → RGB image (`decode_image`); 415 if it is not an image, 413 if it
    decodes too large."""
    if not data:
        raise HTTPException(415, f"{name}: empty file")
    try:
        return decode_image(io.BytesIO(data), name, max_pixels)
    except ImageTooLarge as error:
        raise HTTPException(413, str(error)) from error
    except AdformerError as error:
        raise HTTPException(415, str(error)) from error


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    write_png(image, buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def app_from_environment() -> FastAPI:
    """The app of one worker of ``serve --workers N`` (uvicorn imports it in each process)."""
    settings = json.loads(os.environ[ENVIRONMENT])
    return create_app(settings.pop("source"), **settings)


def serve(
    source: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    backend: str = "auto",
    device=None,
    max_upload_mb: float = MAX_UPLOAD_MB,
) -> None:
    """Run the service until interrupted. The model is opened once here first, so that a bad
    `source` is a clear error before any worker starts."""
    import uvicorn

    open_models(source, backend, device)
    if workers == 1:
        app = create_app(source, backend=backend, device=device, max_upload_mb=max_upload_mb)
        uvicorn.run(app, host=host, port=port)
        return
    settings = {"backend": backend, "device": device, "max_upload_mb": max_upload_mb}
    os.environ[ENVIRONMENT] = json.dumps({"source": str(source), **settings})
    uvicorn.run(
        f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers
    )
