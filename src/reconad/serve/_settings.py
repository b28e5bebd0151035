"""The service's settings: one typed, validated object with every default and limit in one place.

``reconad serve`` options and :func:`reconad.serve.create_app` keyword arguments are the same
names; an unknown name or a value out of range is one line naming the option. The settings
travel to ``--workers`` processes as JSON in an environment variable (:data:`SETTINGS_ENV`),
each worker building its own app from them.

>>> ServeSettings(max_images=8).max_images
8
>>> load_settings({"max_images": 0})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
reconad.errors.ReconadError: invalid value for --max-images (max_images): Input should be ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconad.errors import ReconadError

SETTINGS_ENV = "RECONAD_SERVE_SETTINGS"
MIB = 2**20
# What a request may hold besides its files: part headers and boundaries.
FORM_OVERHEAD_BYTES = 64 * 2**10


class ServeSettings(BaseModel):
    """How ``reconad serve`` prepares, limits and batches what it scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: str = ""
    """The detector file (set by :func:`reconad.serve.create_app` / ``serve``)."""
    resize: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = None
    """(height, width) every upload is resized to; None = the detector's own preprocessing
    (``reconad score --resize``)."""
    grayscale: bool = False
    """Convert colour uploads to grey (also on when the detector was trained so)."""
    device: str | None = None
    """Where the model runs (``auto``, ``cpu``, ``cuda``, ``mps``); None = auto."""
    max_file_bytes: Annotated[int, Field(ge=1)] = 10 * MIB
    """Largest upload accepted, in bytes: counted while the body is read, never read whole."""
    max_images: Annotated[int, Field(ge=1, le=10_000)] = 32
    """Most images (``file`` fields) in one request."""
    max_pixels: Annotated[int, Field(ge=1)] = 2**22
    """Most pixels (width x height) of one image, checked from its header before it is
    decoded (a decompression bomb is refused unread); also Pillow's ``MAX_IMAGE_PIXELS`` in
    the serving process."""
    batching: bool = True
    """Score the images of concurrent requests together (:class:`MicroBatcher`)."""
    batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0
    """How long a batch waits for more requests before its model pass."""
    max_batch: Annotated[int, Field(ge=1)] | None = None
    """Most images in one gathered batch; None = the detector's pass size (256 28x28 images,
    fewer large ones: :func:`reconad.score.images_per_pass`)."""
    decode_threads: Annotated[int, Field(ge=1, le=64)] = max(1, min(4, os.cpu_count() or 1))
    """Threads decoding uploads (bounds the memory of full-size decoded images)."""
    torch_threads: Annotated[int, Field(ge=1)] | None = None
    """torch intra-op threads of each serving process, set by :func:`reconad.serve.serve`
    (:func:`reconad.serve.configure_process`; an app from :func:`create_app` leaves its
    process as it is); None = torch's default (the cores), ``cores // N`` with N workers."""

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: every file at its limit plus the form's own bytes."""
        return self.max_images * self.max_file_bytes + FORM_OVERHEAD_BYTES

    def limits(self) -> dict[str, int]:
        """What a client must stay within (``GET /info``)."""
        return {"max_file_bytes": self.max_file_bytes, "max_images": self.max_images,
                "max_pixels": self.max_pixels, "max_body_bytes": self.max_body_bytes}


def load_settings(options: dict[str, Any]) -> ServeSettings:
    """:class:`ServeSettings` from keyword options, errors as one line naming the option."""
    try:
        return ServeSettings.model_validate(options)
    except ValidationError as exc:
        raise ReconadError(_describe(exc)) from None


def settings_from_environment() -> ServeSettings:
    """The settings a ``--workers`` process was started with (:data:`SETTINGS_ENV`)."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise ReconadError(f"${SETTINGS_ENV} is not set; start the service with reconad serve")
    try:
        return ServeSettings.model_validate_json(raw)
    except ValidationError as exc:
        raise ReconadError(_describe(exc)) from None


def detector_name(path: str | Path) -> str:
    """What to call a detector: its run directory's name for ``RUN/detector.safetensors``,
    else the file's stem."""
    path = Path(path)
    return path.parent.name if path.stem == "detector" and path.parent.name else path.stem


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        option = "--" + key.replace("_", "-")
        if err["type"] == "extra_forbidden":
            known = ", ".join(ServeSettings.model_fields)
            problems.append(f"unknown serve option {key!r}; known: {known}")
        else:
            problems.append(f"invalid value for {option} ({key}): {err['msg']} "
                            f"(got {err.get('input')!r})")
    return "; ".join(problems)
