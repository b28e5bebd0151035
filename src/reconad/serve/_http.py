"""The service's answers to bad requests: a status code and one line, as JSON ``{"error": ...}``.

Every refusal is a :class:`ServeError`: a :class:`~reconad.errors.ReconadError` (one line that
names the problem and the fix) with the HTTP status that says whose problem it is. The
statuses used:

- 400 a malformed or empty form, a field that is not ``file``;
- 413 a file over ``max_file_bytes``, more than ``max_images`` files, an image over
  ``max_pixels`` (a decompression bomb), a body over ``max_body_bytes``;
- 415 a body that is not ``multipart/form-data``, a file that is not an image;
- 422 an image the detector cannot take (wrong channels, a size it does not resize);
- 500 anything else (still one line; the service keeps serving).
"""

from __future__ import annotations

import re

from reconad.errors import ReconadError

BAD_REQUEST, TOO_LARGE, UNSUPPORTED, UNPROCESSABLE, INTERNAL = 400, 413, 415, 422, 500
NAME_CHARS = 120  # what an error message shows of a client's file name
HOW_TO_SEND = "send each image as a form field named 'file' (curl -F file=@img.png URL/score)"


class ServeError(ReconadError):
    """A request the service refuses: ``status`` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(message: str) -> dict[str, str]:
    """The JSON body of every refusal."""
    return {"error": " ".join(str(message).split())}


def shown_name(name: str) -> str:
    """A client's file name as an error message shows it: control characters dropped, long
    names cut to their end, quoted."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", name)
    if len(name) > NAME_CHARS:
        name = "…" + name[-(NAME_CHARS - 1):]
    return repr(name)
