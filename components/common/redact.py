"""Redaction: URLs lose their userinfo, query string and fragment before they are shown or kept.

A URL may carry a credential (`https://user:secret@host/...`, a signed `?X-Goog-Signature=...`).
Every URL that is logged, raised or stored passes through `redact_url` (or `redact_text` for free
text that may contain URLs): the structlog set-up applies it to every logged string, the CLIs to
the `error:` line and to `--output-json`, the steps to what they store (weights index records,
Model metadata, a dataset's `source.description`). File names and archive types come from the
URL's path (`url_path_name`), never from the whole string.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

# scheme://... up to whitespace or a quote/bracket that ends it in prose, reprs and JSON.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# urllib3 and requests name the request as "url: /path?query" in their error messages.
_URL_FIELD = re.compile(r"(url: [^\s?'\"]*)\?[^\s'\")]*")
# urllib3's debug log names the request line: "GET /path?query HTTP/1.1".
_REQUEST_LINE = re.compile(r"(\"[A-Z]+ [^\s?\"]*)\?[^\s\"]*")
REDACTED = "REDACTED"


def redact_url(url: str) -> str:
    """The URL without userinfo, query string and fragment (`?`/`#` parts become `?REDACTED`).

    Anything that is not a URL with a scheme (a local path, `auto`, `none`) is returned as is.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # an unparseable port or bracket: keep only the scheme
        return url.split("://", 1)[0] + "://" + REDACTED
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if "@" in parts.netloc:
        netloc = f"{REDACTED}@{netloc}"
    query = REDACTED if parts.query or parts.fragment or url.endswith(("?", "#")) else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Free text with every URL in it redacted (error messages, log fields)."""
    if "://" not in text and "url: " not in text and "?" not in text:
        return text
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    text = _URL_FIELD.sub(lambda match: f"{match.group(1)}?{REDACTED}", text)
    return _REQUEST_LINE.sub(lambda match: f"{match.group(1)}?{REDACTED}", text)


def redact_value(value: Any) -> Any:
    """`redact_text` applied to every string inside dicts, lists and tuples."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    return value


def url_path(source: str) -> str:
    """The path of an http(s) URL (unquoted); a gs:// URI or a local path as it is."""
    if "://" in source and not source.startswith("gs://"):
        return unquote(urlsplit(source).path)
    return source


def url_path_name(source: str) -> str:
    """The last segment of a URL's path, a gs:// URI or a local path ('' when there is none)."""
    return url_path(source).rstrip("/").rpartition("/")[2]
