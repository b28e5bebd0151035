"""``reconad serve``: the app under uvicorn, in one process or ``--workers`` N processes.

With one worker the app is built here and served in this process. With N, uvicorn starts N
processes that each build the app from the settings passed in ``$RECONAD_SERVE_SETTINGS``
(:func:`app_from_environment`), each with its own detector, batcher and torch threads (the
cores shared out: ``cores // N`` each unless ``torch_threads`` says otherwise); the operating
system spreads the connections over them. Batches then gather only the requests of one
process, so on a machine with few cores one worker batches best; more workers pay where a
pass leaves cores idle (decoding, HTTP) or with many cores.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from reconad.detector import Detector
from reconad.errors import ReconadError
from reconad.serve._app import create_app
from reconad.serve._settings import (
    SETTINGS_ENV,
    ServeSettings,
    load_settings,
    settings_from_environment,
)


def serve(detector: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          access_log: bool = True, **options: Any) -> None:
    """Serve ``detector`` over HTTP until interrupted (Ctrl-C, SIGTERM).

    Args:
        detector: a ``detector.safetensors`` file (checked before anything starts).
        host: the address to listen on (``0.0.0.0`` for every interface).
        port: the port.
        workers: uvicorn worker processes.
        access_log: log one line per request.
        **options: :class:`~reconad.serve.ServeSettings` fields (limits, batching, resize...).

    Raises:
        ReconadError: a bad option or detector, a port that cannot be listened on, the serve
            extra missing.
    """
    if workers < 1:
        raise ReconadError(f"--workers must be at least 1; got {workers}")
    settings = load_settings({**options, "detector": str(detector)})
    if workers > 1 and settings.torch_threads is None:
        settings = settings.model_copy(
            update={"torch_threads": max(1, (os.cpu_count() or 1) // workers)})
    try:
        import uvicorn
    except ImportError:
        raise ReconadError('reconad serve needs FastAPI, uvicorn and python-multipart; run '
                           'pip install "reconad[serve]"') from None
    _check_port(host, port)
    configure_process(settings)
    common = {"host": host, "port": port, "access_log": access_log, "log_level": "info"}
    if workers == 1:
        app = create_app(detector, **settings.model_dump(exclude={"detector"}))
        uvicorn.run(app, **common)
        return
    Detector.load(detector, device="cpu")  # a bad file: one line here, not N tracebacks
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run("reconad.serve._run:app_from_environment", factory=True, workers=workers,
                **common)


def configure_process(settings: ServeSettings) -> None:
    """What one serving process sets for itself: Pillow's pixel limit (``max_pixels``) and
    torch's threads (``torch_threads``)."""
    import torch
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)


def app_from_environment():
    """The app of one ``--workers`` process (uvicorn's ``factory=True``)."""
    settings = settings_from_environment()
    configure_process(settings)
    return create_app(settings.detector, **settings.model_dump(exclude={"detector"}))


def _check_port(host: str, port: int) -> None:
    """Refuse, in one line, an address this process cannot listen on (uvicorn would log it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ReconadError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick "
                               "another --port or --host") from None
