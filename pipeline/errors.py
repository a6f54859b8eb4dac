"""The user-facing error type shared by the library: input or settings that cannot be used.

The CLI prints these as one line (exit 1). It is a ValueError for callers that catch those, but
the CLI does not treat every ValueError as the user's: a ValueError from a bug keeps its traceback.
"""

from __future__ import annotations


class InvalidInput(ValueError):
    """The data, model or settings given cannot be used; the message is one line saying why."""
