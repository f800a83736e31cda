"""The inference service: FastAPI + ONNX Runtime over one exported tier.

``skinlesion serve --model results/export/baseline_cnn`` starts it. Endpoints:

- ``POST /predict``: multipart form, one or several images in the field ``files`` -> per image the
  input guard's verdict (``accepted``, and the ``reasons`` when it is false: the image fails a
  quality check or is out of distribution, :mod:`skinlesion.serve.guard`), the class probabilities,
  ``p_malignant``, the decision at the operating threshold, and the model version (tier + ONNX
  checksum). A refused image still gets its prediction, marked by ``accepted: false``;
- ``GET /health``: liveness plus which model is loaded;
- ``GET /metrics``: Prometheus metrics (requests by endpoint and status, latency histogram,
  errors by reason, images classified, images the guard refused by reason).

Bad input gets a 4xx JSON body ``{"detail": ..., "file": ...}`` (:class:`Error`) that names the
file and the reason: an empty body or a wrong field name (422), more files than allowed (422), an
upload over the size limit (413, refused from Content-Length before it is read, or while
streaming), a file that is not a JPEG or PNG image (415), a truncated or undecodable image (422), a
decompression bomb (413, refused from the header before decoding), a method an endpoint does not
have (405, with ``Allow``). ``/openapi.json`` declares every one of these answers with its schema,
as it does the typed success bodies, so that a client generated from it handles them all.
"""

from __future__ import annotations

import os
import time
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinlesion.serve.guard import REASONS
from skinlesion.serve.inference import MAX_PIXELS, ImageError, OnnxClassifier, read_upload

FIELD = "files"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


IMAGE_TYPES = "image/jpeg, image/png"
# The request body of POST /predict as published; the handler reads the form itself, so that a part
# without a file name is an image too, as the schema allows.
PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FIELD],
                "additionalProperties": False,
                "properties": {
                    FIELD: {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more JPEG/PNG images",
                    }
                },
            },
            "encoding": {FIELD: {"contentType": IMAGE_TYPES}},
        }
    },
}
BAD_FORM = f"expected a multipart/form-data body with one or more images in the field '{FIELD}'"


def text_part_bytes(part: str) -> bytes:
    """The bytes of a form part without a file name, which Starlette hands over as text: decoded as
    UTF-8 or, where that fails (always for JPEG and PNG, whose first byte is never UTF-8), as
    latin-1, which re-encoding undoes exactly."""
    try:
        return part.encode("latin-1")
    except UnicodeEncodeError:
        return part.encode("utf-8")


Reason = Literal[REASONS]  # type: ignore[valid-type]


class Error(BaseModel):
    """The body of every 4xx answer."""

    detail: str = Field(description="What was wrong, naming the file where one was at fault")
    file: str | None = Field(None, description="The upload at fault, when one was")


class ImagePrediction(BaseModel):
    file: str = Field(description="The upload's file name")
    accepted: bool = Field(
        description="False where the input guard refuses the image: the prediction is then not to be used"
    )
    reasons: list[Reason] = Field(description="Why the guard refused the image; empty when accepted")
    ood_score: float = Field(
        description="The guard's out-of-distribution score (higher: further from the training data)"
    )
    predicted_class: str = Field(description="The most probable class (the balanced-accuracy argmax)")
    probabilities: dict[str, float] = Field(description="Probability per class, by class name")
    p_malignant: float = Field(ge=0, le=1, description="Malignant probability (mel + bcc + akiec, population prior)")
    decision: Literal["malignant", "benign"] = Field(description="p_malignant at or above the operating threshold")


class Predictions(BaseModel):
    model_version: str = Field(description="Tier and ONNX checksum of the model that answered")
    operating_threshold: float = Field(description="Threshold on p_malignant, chosen on the validation split")
    predictions: list[ImagePrediction] = Field(description="One per uploaded file, in upload order")


class Health(BaseModel):
    status: Literal["ok"]
    model_version: str
    tier: str
    task: Literal["multiclass", "binary"]
    classes: list[str]
    operating_threshold: float


def error_responses(*statuses: int) -> dict:
    """OpenAPI ``responses`` entries for 4xx answers, all with the :class:`Error` body."""
    meaning = {
        405: "The endpoint does not have that method (see the Allow header)",
        413: "Upload or image too large",
        415: "A file is not a JPEG or PNG image",
        422: "Not a multipart body with 1 or more images in 'files', too many files, or an undecodable image",
    }
    return {status: {"model": Error, "description": meaning[status]} for status in statuses}


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
            response = JSONResponse(Error(detail=_BodyTooLarge(self.limit).detail).model_dump(), status_code=413)
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
    precision: str = "fp32",
) -> FastAPI:
    classifier = OnnxClassifier(model_dir, threads=threads, precision=precision)
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
    refused = Counter(
        "skinlesion_images_refused", "Images the input guard refused, by reason", ["reason"], registry=registry
    )
    for reason in REASONS:
        refused.labels(reason)

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

    def error(request: Request, status: int, detail: str, reason: str, file=None, headers=None) -> JSONResponse:
        request.state.error = reason
        return JSONResponse(Error(detail=detail, file=file).model_dump(), status_code=status, headers=headers)

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, exc: ImageError):
        reason = {413: "image_too_large", 415: "not_an_image"}.get(exc.status, "undecodable_image")
        return error(request, exc.status, str(exc), reason, file=exc.name)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, exc: RequestValidationError):
        fields = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
        return error(request, 422, f"{BAD_FORM} (problem with: {', '.join(fields) or 'body'})", "bad_form")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        reason = "upload_too_large" if exc.status_code == 413 else str(exc.status_code)
        # A 405 keeps Starlette's Allow header (RFC 9110).
        return error(request, exc.status_code, str(exc.detail), reason, headers=getattr(exc, "headers", None))

    @app.get("/health", response_model=Health, responses=error_responses(405, 413))
    def health() -> Health:
        c = classifier.contract
        return Health(
            status="ok",
            model_version=classifier.version,
            tier=c["tier"],
            task=c["task"],
            classes=classifier.class_names,
            operating_threshold=classifier.threshold,
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **error_responses(405, 413),
        },
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/predict",
        response_model=Predictions,
        responses=error_responses(405, 413, 415, 422),
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(request: Request) -> Predictions:
        try:
            form = await request.form(max_files=max_files + 1)
        except StarletteHTTPException as exc:
            if exc.status_code != 400:  # an upload over the limit stays a 413
                raise
            raise HTTPException(422, f"{BAD_FORM} ({exc.detail})") from exc  # malformed, or far too many parts
        parts, unexpected = form.getlist(FIELD), sorted(set(form) - {FIELD})
        if unexpected:
            raise HTTPException(422, f"{BAD_FORM}; unexpected field(s) {', '.join(map(repr, unexpected))}")
        if not parts:
            raise HTTPException(422, f"{BAD_FORM} (problem with: {FIELD})")
        if len(parts) > max_files:
            raise HTTPException(422, f"{len(parts)} files in one request; the limit is {max_files}")
        uploads = [
            (f"{FIELD}[{i}]", text_part_bytes(p))
            if isinstance(p, str)
            else (p.filename or f"{FIELD}[{i}]", await p.read())
            for i, p in enumerate(parts)
        ]

        def classify():  # decoding and inference are CPU work: off the event loop
            decoded = [read_upload(n, data, size=classifier.cache_size, max_pixels=max_pixels) for n, data in uploads]
            return classifier.predict(decoded)

        predictions = await run_in_threadpool(classify)
        images.inc(len(predictions))
        for p in predictions:
            for reason in p.reasons:
                refused.labels(reason).inc()
        return Predictions(
            model_version=classifier.version,
            operating_threshold=classifier.threshold,
            predictions=[ImagePrediction(**p.as_dict()) for p in predictions],
        )

    return app
