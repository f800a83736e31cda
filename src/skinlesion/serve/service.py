"""The inference service: FastAPI + ONNX Runtime over one exported tier.

``skinlesion serve --model results/export/baseline_cnn`` starts it. Endpoints:

- ``POST /predict``: multipart form, one or several images in the field ``files`` -> per image the
  class probabilities, ``p_malignant``, the decision at the operating threshold, and the model
  version (tier + ONNX checksum);
- ``GET /health``: liveness plus which model is loaded;
- ``GET /metrics``: Prometheus metrics (requests by endpoint and status, latency histogram,
  errors by reason, images classified).

Bad input gets a 4xx JSON body ``{"detail": ...}`` that names the file and the reason: an empty
body or a wrong field name (422), more files than allowed (422), an upload over the size limit
(413, refused from Content-Length before it is read, or while streaming), a file that is not an
image (415), a truncated or undecodable image (422), a decompression bomb (413, refused from the
header before decoding).
"""

from __future__ import annotations

import os
import time
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinlesion.serve.inference import MAX_PIXELS, ImageError, OnnxClassifier, decode

FIELD = "files"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"upload exceeds the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": _BodyTooLarge(self.limit).detail}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        return await self.app(scope, limited, send)


def create_app(
    model_dir: str | os.PathLike,
    *,
    max_upload_bytes: int = 10 * 2**20,
    max_pixels: int = MAX_PIXELS,
    max_files: int = 64,
    threads: int = 0,
) -> FastAPI:
    classifier = OnnxClassifier(model_dir, threads=threads)
    registry = CollectorRegistry()
    requests = Counter("skinlesion_requests", "HTTP requests", ["endpoint", "method", "status"], registry=registry)
    latency = Histogram(
        "skinlesion_request_latency_seconds",
        "Request latency",
        ["endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    errors = Counter("skinlesion_errors", "Requests answered with an error", ["endpoint", "reason"], registry=registry)
    images = Counter("skinlesion_images_classified", "Images classified", registry=registry)

    app = FastAPI(
        title="skinlesion inference",
        description="Research tool, not a diagnosis. Class and malignancy probabilities from an exported model.",
        version=classifier.version,
    )
    app.add_middleware(BodyLimit, limit=max_upload_bytes)

    @app.middleware("http")
    async def instrument(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        endpoint = request.url.path if request.url.path in ("/predict", "/health", "/metrics") else "other"
        latency.labels(endpoint).observe(time.perf_counter() - start)
        requests.labels(endpoint, request.method, str(response.status_code)).inc()
        if response.status_code >= 400:
            default = "upload_too_large" if response.status_code == 413 else str(response.status_code)
            errors.labels(endpoint, getattr(request.state, "error", default)).inc()
        return response

    def error(request: Request, status: int, detail: str, reason: str, **extra) -> JSONResponse:
        request.state.error = reason
        return JSONResponse({"detail": detail, **extra}, status_code=status)

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, exc: ImageError):
        reason = {413: "image_too_large", 415: "not_an_image"}.get(exc.status, "undecodable_image")
        return error(request, exc.status, str(exc), reason, file=exc.name)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, exc: RequestValidationError):
        fields = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
        detail = (
            f"expected a multipart/form-data body with one or more images in the field '{FIELD}'"
            f" (problem with: {', '.join(fields) or 'body'})"
        )
        return error(request, 422, detail, "bad_form")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        reason = "upload_too_large" if exc.status_code == 413 else str(exc.status_code)
        return error(request, exc.status_code, exc.detail, reason)

    @app.get("/health")
    def health() -> dict:
        c = classifier.contract
        return {
            "status": "ok",
            "model_version": classifier.version,
            "tier": c["tier"],
            "task": c["task"],
            "classes": classifier.class_names,
            "operating_threshold": classifier.threshold,
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict")
    async def predict(files: Annotated[list[UploadFile], File(description="One or more JPEG/PNG images")]) -> dict:
        if len(files) > max_files:
            raise HTTPException(422, f"{len(files)} files in one request; the limit is {max_files}")
        uploads = [(upload.filename or f"{FIELD}[{i}]", await upload.read()) for i, upload in enumerate(files)]

        def classify():  # decoding and inference are CPU work: off the event loop
            squares = [(n, decode(n, data, size=classifier.cache_size, max_pixels=max_pixels)) for n, data in uploads]
            return classifier.predict(squares)

        predictions = await run_in_threadpool(classify)
        images.inc(len(predictions))
        return {
            "model_version": classifier.version,
            "operating_threshold": classifier.threshold,
            "predictions": [p.as_dict() for p in predictions],
        }

    return app
