"""The HTTP face of the service: a FastAPI app over a :class:`ScoringService`.

Routes: ``GET /`` (the page, :file:`page.html`: self-contained, no network), ``GET /health``,
``GET /info``, ``POST /score`` (``?maps=1`` adds heat-maps). Every refusal and every failure
is a status and one line of JSON ``{"error": "..."}`` (:mod:`reconad.serve._http`); the
service keeps serving after each.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path
from typing import Any

from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.serve._http import INTERNAL, TOO_LARGE, UNPROCESSABLE, ServeError, error_body
from reconad.serve._service import ScoringService
from reconad.serve._settings import load_settings
from reconad.serve._uploads import read_uploads

try:  # the serve extra (pip install "reconad[serve]"); create_app says so when it is missing
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException
except ImportError:  # pragma: no cover - reconad.serve still imports, create_app refuses
    FastAPI = None

ROUTES = "GET /, GET /health, GET /info, POST /score"


def create_app(detector: Detector | str | Path, **options: Any) -> FastAPI:
    """The service as an ASGI app (run it with uvicorn, or :func:`reconad.serve.serve`).

    Args:
        detector: a ``detector.safetensors`` path (loaded now: a bad file is a
            :class:`~reconad.errors.ReconadError` here, not at the first request) or a fitted
            :class:`~reconad.detector.Detector`.
        **options: :class:`~reconad.serve.ServeSettings` fields: ``max_file_bytes``,
            ``max_images``, ``max_pixels``, ``batching``, ``batch_wait_ms``, ``max_batch``,
            ``resize``, ``grayscale``, ``device``, ``decode_threads``.

    Returns:
        A FastAPI app; ``app.state.service`` is its :class:`ScoringService`.

    >>> app = create_app("runs/default/detector.safetensors", max_images=8)  # doctest: +SKIP
    """
    if FastAPI is None:
        raise ReconadError('reconad serve needs FastAPI, uvicorn and python-multipart; run '
                           'pip install "reconad[serve]"')
    path = None if isinstance(detector, Detector) else str(detector)
    settings = load_settings({**options, **({"detector": path} if path else {})})
    service = ScoringService(detector, settings)
    page = resources.files("reconad.serve").joinpath("page.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = FastAPI(title="reconad", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.service = service

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "detector": service.name}

    @app.get("/info")
    async def info() -> dict:
        return service.info()

    @app.post("/score")
    async def score(request: Request, maps: bool = False) -> JSONResponse:
        uploads = []
        try:
            uploads = await read_uploads(request.headers.get("content-type"),
                                         request.headers.get("content-length"),
                                         request.stream(), settings)
            return JSONResponse(await service.score(uploads, maps))
        except ServeError as exc:
            return _refusal(exc.status, str(exc))
        except ReconadError as exc:  # the detector refused the images: still the client's
            return _refusal(UNPROCESSABLE, str(exc))
        except Exception as exc:  # noqa: BLE001 - one line, and the service goes on
            return _refusal(INTERNAL, f"scoring failed ({type(exc).__name__}: {exc}); the "
                                      "service goes on: report this with the image")
        finally:
            for upload in uploads:
                upload.close()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return _refusal(UNPROCESSABLE, f"invalid request ({'; '.join(problems)}); e.g. "
                                       "POST /score?maps=1")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _refusal(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}; "
                                         f"the service answers {ROUTES}")

    return app


def _refusal(status: int, message: str) -> JSONResponse:
    # A refused upload may be cut short (not read to its end): close that connection.
    headers = {"Connection": "close"} if status == TOO_LARGE else None
    return JSONResponse(error_body(message), status_code=status, headers=headers)
