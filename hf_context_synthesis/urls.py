"""URL helpers: never show credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def sanitize_url(url: str) -> str:
    """Drop ``user:password@``, the query string and the fragment from ``url``.

    >>> sanitize_url("https://user:pw@tgi.example:8080/v1?key=abc")
    'https://tgi.example:8080/v1'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
