"""The one exception type users see.

Every problem caused by the user's input (a missing file, a bad config value, an empty class
selection...) is raised as :class:`ReconadError` with a one-line message that names the problem
and the fix. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations


class ReconadError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, message: str) -> None:
        # Keep messages to a single line: the CLI prints them as they are.
        super().__init__(" ".join(str(message).split()))
