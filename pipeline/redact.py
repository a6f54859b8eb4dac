"""Secrets out of URIs before they reach a message, a log line or a record."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"([?&][^=&\s]*(?:token|secret|password|passwd|key|signature|credential)"
                           r"[^=&\s]*=)[^&\s]*", re.IGNORECASE)


def redact_uri(text: str) -> str:
    """`scheme://user:password@host/...?token=...` -> `scheme://***@host/...?token=***`.
    Works on any text that contains URIs; a text without credentials comes back unchanged."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
