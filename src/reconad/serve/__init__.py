"""``reconad serve``: a saved detector behind HTTP, with a page to drop images on.

``pip install "reconad[serve]"`` (FastAPI, uvicorn, python-multipart). The routes:
``GET /`` a self-contained page (drag and drop or pick images, see each one's score, flag
and heat-map beside it), ``GET /health``, ``GET /info`` (detector, preparation, limits),
``POST /score`` (a ``multipart/form-data`` form of ``file`` fields -> one ``{id, score, flag,
threshold}`` per file, the numbers ``reconad score`` gives; ``?maps=1`` adds a base64 PNG
heat-map of each). Uploads are limited while they are read (bytes per file, images per
request, pixels per image); a refusal is a 4xx and one line ``{"error": ...}``. Concurrent
requests are scored together in one model pass (:class:`MicroBatcher`).

Modules, from the floor up: ``_settings`` (:class:`ServeSettings`: limits, batching,
preparation), ``_http`` (:class:`ServeError`: status + one line), ``_uploads`` (the form read
as it streams in, under the limits), ``_images`` (an upload made into the detector's image,
as ``reconad score`` does), ``_batcher`` (:class:`MicroBatcher`), ``_service``
(:class:`ScoringService`: decode, batch, score), ``_app`` (:func:`create_app`, the FastAPI
routes; the page is ``page.html``), ``_run`` (:func:`serve`: uvicorn, ``--workers``).

>>> from reconad.serve import create_app, serve
>>> app = create_app("runs/default/detector.safetensors", max_images=8)  # doctest: +SKIP
>>> serve("runs/default/detector.safetensors", port=8000, workers=2)   # doctest: +SKIP
"""

from reconad.serve._app import create_app
from reconad.serve._batcher import MicroBatcher
from reconad.serve._http import ServeError, error_body
from reconad.serve._images import Preparation, decode_upload
from reconad.serve._run import app_from_environment, configure_process, serve
from reconad.serve._service import ScoringService
from reconad.serve._settings import SETTINGS_ENV, ServeSettings, load_settings
from reconad.serve._uploads import Upload, read_uploads

__all__ = ["SETTINGS_ENV", "MicroBatcher", "Preparation", "ScoringService", "ServeError",
           "ServeSettings", "Upload", "app_from_environment", "configure_process",
           "create_app", "decode_upload", "error_body", "load_settings", "read_uploads",
           "serve"]
