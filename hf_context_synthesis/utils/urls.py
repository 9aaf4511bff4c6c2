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


def validate_endpoint(url: object, name: str = "endpoint") -> str:
    """Return ``url`` if it is a usable ``http(s)://host[:port][/path]`` URL, else raise ``ValueError``.

    The message never repeats a password: a URL without a scheme (``user:pw@host``) is shown with
    its userinfo removed.

    >>> validate_endpoint("http://127.0.0.1:8080")
    'http://127.0.0.1:8080'
    >>> validate_endpoint("http://")
    Traceback (most recent call last):
    ...
    ValueError: endpoint must be an http(s) URL with a host, e.g. 'http://localhost:8080'; got 'http://' (no host)
    """
    if not isinstance(url, str):
        raise ValueError(f"{name} must be an http(s) URL string, got {type(url).__name__}")
    shown = _without_userinfo(url)
    example = "e.g. 'http://localhost:8080'"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http(s) URL with a host, {example}; got {shown!r} (no http:// or https://)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid URL ({exc}): {shown!r}") from None
    if not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL with a host, {example}; got {shown!r} (no host)")
    return url


def _without_userinfo(url: str) -> str:
    """``url`` with anything up to the last ``@`` of its authority replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return (scheme + sep if sep else "") + authority + slash + tail
