"""What an inference server said when it refused a request, and the errors that end a run.

* :func:`server_error_message` reads an HTTP error body the way servers write it: FastAPI
  ``{"detail": ...}`` (``transformers serve``, vLLM), OpenAI ``{"error": {"message": ...}}``, TGI
  ``{"error": ..., "error_type": ...}``, or plain text; whitespace is collapsed to one line and the
  result is capped at :data:`MAX_SERVER_MESSAGE` characters. Every message built from a server body
  goes through it (and its :func:`redact_message` hook).
* :func:`failure_key` groups failure reasons: the status and the message with numbers, ids and
  quoted values normalized, so a thousand ``HTTP 400: ... Given: 5012 tokens`` give one key.
* :class:`EndpointUnreachableError`, :class:`ModelDiscoveryError` and :class:`EndpointRouteError`
  end a run at once with one clear line (they are ``ConnectionError`` / ``ValueError`` subclasses,
  which the CLI prints as ``error: ...``).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "MAX_SERVER_MESSAGE",
    "EndpointRouteError",
    "EndpointUnreachableError",
    "ModelDiscoveryError",
    "ResponseTooLargeError",
    "failure_key",
    "redact_message",
    "server_error_message",
]

#: Longest server message kept in failure reasons, reports and CLI errors (characters).
MAX_SERVER_MESSAGE = 1000


class EndpointUnreachableError(ConnectionError):
    """The endpoint answered none of ``/health``, ``/info``, ``/v1/models`` (the message names the URL)."""


class ModelDiscoveryError(ValueError):
    """The served model could not be determined (several served, none reported, or not the one asked for)."""


class EndpointRouteError(ValueError):
    """The server has no route for the configured ``api`` (e.g. ``api="text"`` against an OpenAI-only server)."""


class ResponseTooLargeError(Exception):
    """A response body exceeded the backend's ``max_response_bytes`` (the request fails, it is not retried)."""


def redact_message(text: str) -> str:
    """Redaction hook: every message built from a server body passes through here before it is shown.

    Every token in play (endpoint token, ``HF_TOKEN``, the login cache, URL passwords) is replaced by
    ``***`` (:func:`hf_context_synthesis.utils.secrecy.redact`).
    """
    from ..utils.secrecy import redact

    return redact(text)


def _from_json(data: Any) -> str | None:
    if isinstance(data, str):
        return data
    if isinstance(data, list):
        parts = [p for p in (_from_json(d) for d in data) if p]
        return "; ".join(parts) if parts else None
    if not isinstance(data, dict):
        return None
    for key in ("error", "detail", "message", "msg", "error_description", "errors"):
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, dict):
            inner = _from_json(value)
            if inner:
                return inner
        elif isinstance(value, list):
            # FastAPI validation errors: [{"loc": [...], "msg": "...", "type": "..."}]
            parts = []
            for item in value:
                if isinstance(item, dict) and "msg" in item:
                    loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
                    parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
                else:
                    text = _from_json(item)
                    if text:
                        parts.append(text)
            if parts:
                return "; ".join(parts)
        elif value is not None and str(value).strip():
            return str(value)
    return None


def server_error_message(body: bytes | str | None, content_type: str = "", limit: int = MAX_SERVER_MESSAGE) -> str:
    """The server's own words from an HTTP error body, on one line, capped at ``limit`` characters.

    Redaction hook: the result passes through :func:`redact_message`.

    >>> server_error_message(b'{"detail": "Server is pinned to \\'m\\'; requested \\'tgi\\'."}')
    "Server is pinned to 'm'; requested 'tgi'."
    >>> server_error_message(b'{"error": {"message": "model not found", "type": "invalid_request_error"}}')
    'model not found'
    >>> server_error_message(b'{"error": "Input validation error", "error_type": "validation"}')
    'Input validation error'
    """
    if body is None:
        return ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, (bytes, bytearray)) else str(body)
    message: str | None = None
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            message = _from_json(json.loads(stripped))
        except ValueError:
            message = None
    if message is None:
        if "html" in content_type.lower() or stripped.lower().startswith(("<!doctype", "<html")):
            message = re.sub(r"<[^>]+>", " ", stripped)
        else:
            message = stripped
    message = " ".join(message.split())
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    return redact_message(message)


_NORMALIZERS = (
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<id>"),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<id>"),
    # numbers standing alone (not inside a path, a name or an identifier such as "pytest-59")
    (re.compile(r"(?<![\w/.-])\d+(?:\.\d+)?(?!/)"), "<n>"),
)


def failure_key(reason: str, limit: int = 300) -> str:
    """The group of a failure reason: request ids, hex ids and numbers replaced, capped at ``limit``.

    The HTTP status stays: ``"HTTP 422: Input validation error: <n> tokens"``.

    >>> failure_key("HTTP 422: inputs must have less than 4096 tokens. Given: 5012 (after 1 attempts)")
    'HTTP 422: inputs must have less than <n> tokens. Given: <n>'
    """
    reason = re.sub(r"\s*\(after \d+ attempts?[^)]*\)$", "", reason)
    match = re.match(r"(HTTP \d{3})(.*)$", reason, flags=re.S)
    head, tail = (match.group(1), match.group(2)) if match else ("", reason)
    for pattern, repl in _NORMALIZERS:
        tail = pattern.sub(repl, tail)
    key = head + tail
    return key if len(key) <= limit else key[: limit - 1] + "…"
