"""Tokens in play: which one an endpoint gets, and redaction of every one of them from text and logs.

Two kinds of credentials meet in a run: the **Hub token** (``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN`` or
the ``hf auth login`` cache), which ``datasets``/``huggingface_hub`` use for Hub downloads and pushes,
and the **endpoint token** (``endpoint_token=``), the bearer token of the inference server. The Hub
token is sent to an inference endpoint only when asked (``endpoint_token=True``) or when the endpoint
is itself a Hugging Face host (Inference Endpoints, Spaces, the Hub).

Every token in play, whichever kind, is replaced by ``***`` in messages, reports, dataset info and log
records of the library's loggers (:func:`redact`, :func:`redact_obj`, :class:`SecretFilter`,
:func:`install_log_redaction`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "REDACTED",
    "SecretFilter",
    "endpoint_token",
    "hub_tokens",
    "install_log_redaction",
    "is_hub_endpoint",
    "redact",
    "redact_obj",
    "register_secret",
]

#: What a secret is replaced with.
REDACTED = "***"
#: Shorter strings are not treated as secrets (they would redact ordinary words).
MIN_SECRET_LENGTH = 6
#: Logger name prefixes whose records are redacted by :func:`install_log_redaction`.
LIBRARY_LOGGERS = ("hf_context_synthesis", "dataset_scripts", "trainer_callbacks")
#: Host suffixes that belong to Hugging Face (the Hub token may go there without being asked).
HUB_HOST_SUFFIXES = ("huggingface.co", "hf.co", "huggingface.cloud", "hf.space")

_registered: set[str] = set()
_lock = threading.Lock()
_hub_cache: tuple[Any, tuple[str, ...]] = (None, ())


def register_secret(value: Any) -> None:
    """Remember ``value`` (a token, password or Authorization header value) so it is always redacted.

    For ``"Bearer xyz"``/``"Basic xyz"`` the credential part ``xyz`` is registered as well.
    """
    if not isinstance(value, str):
        return
    value = value.strip()
    parts = [value]
    if " " in value:
        parts.append(value.split(" ", 1)[1].strip())
    with _lock:
        for part in parts:
            if len(part) >= MIN_SECRET_LENGTH:
                _registered.add(part)


def hub_tokens() -> tuple[str, ...]:
    """The Hub tokens this process could use: ``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``, the login cache."""
    global _hub_cache
    env = (os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    path, mtime = None, None
    try:
        from huggingface_hub import constants

        path = constants.HF_TOKEN_PATH
        mtime = os.stat(path).st_mtime_ns if path else None
    except (ImportError, OSError):
        pass
    key = (env, path, mtime)
    if _hub_cache[0] == key:
        return _hub_cache[1]
    found = list(env)
    if mtime is not None:
        try:
            with open(path, encoding="utf-8") as fh:  # type: ignore[arg-type]
                found.append(fh.read().strip())
        except OSError:  # pragma: no cover - unreadable login cache: nothing to add
            pass
    tokens = tuple(t.strip() for t in found if isinstance(t, str) and len(t.strip()) >= MIN_SECRET_LENGTH)
    _hub_cache = (key, tokens)
    return tokens


def _secrets() -> list[str]:
    with _lock:
        found = set(_registered)
    found.update(hub_tokens())
    # Longest first, so that a secret containing another is replaced whole.
    return sorted(found, key=len, reverse=True)


def redact(text: Any) -> Any:
    """``text`` with every token in play replaced by :data:`REDACTED` (non-strings are returned as is)."""
    if not isinstance(text, str) or not text:
        return text
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_obj(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, tuples, strings) with :func:`redact` applied to every string."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_obj(k): redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_obj(v) for v in value)
    return value


def is_hub_endpoint(url: str) -> bool:
    """Whether ``url`` is a Hugging Face host (or the ``HF_ENDPOINT`` in use), where the Hub token belongs."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    if not host:
        return False
    hub = os.environ.get("HF_ENDPOINT")
    if hub:
        try:
            if (urlsplit(hub).hostname or "").lower() == host:
                return True
        except ValueError:
            pass
    return any(host == s or host.endswith("." + s) for s in HUB_HOST_SUFFIXES)


def endpoint_token(token: str | bool | None, url: str) -> str | bool:
    """The bearer token to send to the inference endpoint ``url``, or ``False`` for none.

    ``str``: that token. ``False``: none. ``True``: the Hub token (``HF_TOKEN`` or the login cache),
    asked for explicitly. ``None``: the Hub token only if ``url`` is a Hugging Face host
    (:func:`is_hub_endpoint`), else none: the Hub token is never sent elsewhere unless asked.
    """
    if isinstance(token, str):
        register_secret(token)
        return token if token else False
    if token is False or (token is None and not is_hub_endpoint(url)):
        return False
    hub = hub_tokens()
    if not hub:
        if token is True:
            raise ValueError(
                "endpoint_token=True sends the Hugging Face Hub token to the endpoint, but there is none: "
                "set HF_TOKEN or run `hf auth login`, or pass the endpoint's own token as endpoint_token='...'"
            )
        return False
    return hub[0]


class SecretFilter(logging.Filter):
    """A :class:`logging.Filter` that redacts every token in play from a record (message, args, traceback).

    Attach it to any handler to redact other libraries' records as well.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    if getattr(record, "_secrets_redacted", False):
        return
    record._secrets_redacted = True  # type: ignore[attr-defined]
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to the handler to report
        return
    if not _secrets():
        return
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


_installed = False


def install_log_redaction() -> None:
    """Redact every record of the library's loggers (:data:`LIBRARY_LOGGERS`), whatever the handler.

    A filter on a logger only sees records logged on that very logger, not its children's, so the
    redaction is done when a record of one of the library's loggers is made (the record factory is
    wrapped, other libraries' records pass untouched); :class:`SecretFilter` is attached to the
    library logger too. Idempotent.
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith(LIBRARY_LOGGERS):
            # Messages are formatted lazily; redact once the record is complete (exc_info included).
            _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    logging.getLogger("hf_context_synthesis").addFilter(SecretFilter())
