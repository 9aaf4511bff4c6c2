"""URL helpers: never show credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def sanitize_url(url: str) -> str:
    """Drop ``user:password@``, the query string and the fragment from ``url``.

    >>> sanitize_url("https://user:pw@tgi.example:8080/v1?key=abc")
    'https://tgi.example:8080/v1'
    >>> sanitize_url("http://[::1]:8080/")
    'http://[::1]:8080/'
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
