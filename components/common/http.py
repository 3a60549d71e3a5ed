"""HTTP(S) downloads: streamed, timed out, retried with backoff and jitter, resumed with Range.

Connection errors, timeouts, truncated bodies, 408, 429 and 5xx are transient and retried
(tenacity, exponential backoff with jitter). Any other 4xx (403, 404, ...) fails at once. A
broken transfer resumes from the bytes already on disk when the server answers a Range request
with 206; a server that ignores Range sends the whole body again.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

import requests
import tenacity
import urllib3

from components.common.logging import get_logger

log = get_logger("http")

CHUNK_BYTES = 1 << 20  # largest piece read from the socket at once
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Disk full, quota exceeded, file-size limit reached: the write cannot succeed by retrying.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DownloadError(RuntimeError):
    """A download failed for good; the message names the URL and the cause."""


class TransientDownloadError(DownloadError):
    """A download failed in a way worth retrying."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a download tries before it gives up."""

    attempts: int = 6  # total tries, the first included
    initial_wait_s: float = 1.0  # first backoff; doubles each retry, plus jitter
    max_wait_s: float = 30.0  # cap of one backoff
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0  # longest silence while reading the body


def _range_start(content_range: str) -> int | None:
    """First byte offset of a `Content-Range: bytes START-END/SIZE` header, None if unreadable."""
    unit, _, spec = content_range.strip().partition(" ")
    start, _, _ = spec.partition("-")
    return int(start) if unit == "bytes" and start.isdigit() else None


def _attempt(url: str, part: Path, session: requests.Session, policy: RetryPolicy) -> None:
    have = part.stat().st_size if part.exists() else 0
    # identity: the bytes on disk are the object's bytes, so a Range offset means the same thing.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = (policy.connect_timeout_s, policy.read_timeout_s)
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as error:
        raise TransientDownloadError(f"{url}: {type(error).__name__}: {error}") from error
    with response:
        resumed = _check_response(url, response, part, have)
        _write_body(url, response, part, have, resumed)


def _check_response(url: str, response: requests.Response, part: Path, have: int) -> bool:
    """Refuse error statuses (transient ones to be retried); True when the server resumed."""
    if response.status_code == 416 and have:
        # Our partial file is no prefix of the current object: start again.
        part.unlink()
        raise TransientDownloadError(f"{url}: range not satisfiable, restarting")
    if response.status_code in TRANSIENT_STATUS:
        raise TransientDownloadError(f"{url}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
    resumed = response.status_code == 206
    if resumed:
        start = _range_start(response.headers.get("Content-Range", ""))
        if start != have:
            part.unlink()
            raise TransientDownloadError(
                f"{url}: asked for bytes from {have}, got range start {start}, restarting"
            )
        log.info("download_resumed", url=url, offset=have)
    return resumed


def _write_body(
    url: str, response: requests.Response, part: Path, have: int, resumed: bool
) -> None:
    """Append (resumed) or write the body to `part`; a short or broken body is transient."""
    expected = response.headers.get("Content-Length")
    received = 0
    try:
        with open(part, "ab" if resumed else "wb") as handle:
            # read1 hands over whatever has arrived, so the bytes received before a broken
            # connection reach the disk and the next attempt resumes after them
            # (iter_content would drop a partly filled chunk).
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
                handle.write(chunk)
                received += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.ReadTimeoutError,
        urllib3.exceptions.SSLError,
    ) as error:
        raise TransientDownloadError(
            f"{url}: connection broken after {have + received} bytes ({error})"
        ) from error
    except OSError as error:
        if error.errno in NO_SPACE_ERRNOS:
            raise DownloadError(
                f"{url}: no space left while writing {part} ({error.strerror})"
            ) from error
        raise DownloadError(f"{url}: cannot write {part}: {error.strerror}") from error
    if expected is not None and received < int(expected):
        raise TransientDownloadError(
            f"{url}: truncated body, got {have + received} of {have + int(expected)} bytes"
        )


def download(
    url: str,
    dest: str | Path,
    *,
    policy: RetryPolicy = RetryPolicy(),
    session: requests.Session | None = None,
) -> Path:
    """Download `url` to `dest` atomically: `dest` appears only once the body is complete."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    session = session or requests.Session()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientDownloadError),
        wait=tenacity.wait_exponential_jitter(initial=policy.initial_wait_s, max=policy.max_wait_s),
        stop=tenacity.stop_after_attempt(policy.attempts),
        before_sleep=lambda state: log.warning(
            "download_retry",
            url=url,
            attempt=state.attempt_number,
            error=str(state.outcome.exception()),
        ),
        reraise=True,
    )
    try:
        retrying(_attempt, url, part, session, policy)
    except TransientDownloadError as error:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise DownloadError(f"{error} (gave up after {policy.attempts} attempts)") from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    os.replace(part, dest)
    return dest
