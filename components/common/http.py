"""HTTP(S) downloads: streamed, timed out, retried with backoff and jitter, resumed with Range.

Connection errors, timeouts, truncated bodies, 408, 429 and 5xx are transient and retried
(tenacity, exponential backoff with jitter). Any other 4xx (403, 404, ...) fails at once. A
broken transfer resumes from the bytes already on disk when the server answers a Range request
with 206; a server that ignores Range sends the whole body again.

Limits: a body larger than `max_bytes` is refused (from its Content-Length, or when the bytes
received pass it), the whole download (retries and waits included) stops at `deadline_s`, and a
redirect is followed only to the same origin, or to https on the same host or on a host of
`redirect_hosts`. Messages name the URL without userinfo or query string (`redact_url`).

Private sources: the header in `$TL_SOURCE_AUTH_HEADER` (`Name: value`, e.g. from a Kubernetes
Secret through kfp-kubernetes' `use_secret_as_env`) is sent only to the hosts listed in
`$TL_SOURCE_AUTH_HOSTS` (comma-separated), only over https (or to a loopback address), never
after a redirect to another host. Credentials never belong in the URL.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import tenacity
import urllib3

from components.common.logging import get_logger
from components.common.redact import redact_text, redact_url

log = get_logger("http")

CHUNK_BYTES = 1 << 20  # largest piece read from the socket at once
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Disk full, quota exceeded, file-size limit reached: the write cannot succeed by retrying.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: backbones (~100-300 MB), Fashion-MNIST, photo archives
AUTH_HEADER_ENV = "TL_SOURCE_AUTH_HEADER"  # "Name: value", sent only to the hosts below
AUTH_HOSTS_ENV = "TL_SOURCE_AUTH_HOSTS"  # comma-separated host names that get the header


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
    deadline_s: float = 3600.0  # the whole download, retries and waits included
    max_bytes: int = DEFAULT_MAX_BYTES  # largest body accepted
    redirect_hosts: tuple[str, ...] = ()  # hosts an https redirect may lead to besides the same


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect(origin: str, target: str, policy: RetryPolicy) -> None:
    """Refuse a redirect unless it stays on the same origin or goes to https on an allowed host."""
    source, dest = urlsplit(origin), urlsplit(target)
    same_origin = (source.scheme, source.hostname, source.port) == (
        dest.scheme,
        dest.hostname,
        dest.port,
    )
    allowed_hosts = {source.hostname, *policy.redirect_hosts}
    if same_origin or (dest.scheme == "https" and dest.hostname in allowed_hosts):
        return
    raise DownloadError(
        f"{redact_url(origin)}: refused a redirect to {redact_url(target)} (only the same origin, "
        "or https to the same host or to an allowed redirect host)"
    )


def auth_headers(url: str) -> dict[str, str]:
    """The private-source header for `url` when its host is listed in $TL_SOURCE_AUTH_HOSTS."""
    header = os.environ.get(AUTH_HEADER_ENV, "")
    hosts = {h.strip().lower() for h in os.environ.get(AUTH_HOSTS_ENV, "").split(",") if h.strip()}
    parts = urlsplit(url)
    if not header or (parts.hostname or "").lower() not in hosts:
        return {}
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise DownloadError(
            f"{redact_url(url)}: {AUTH_HEADER_ENV} is sent only over https; use an https URL"
        )
    name, sep, value = header.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise DownloadError(f"{AUTH_HEADER_ENV} must look like 'Name: value'")
    return {name.strip(): value.strip()}


def _get(url: str, session: requests.Session, headers: dict, policy: RetryPolicy, timeout):
    """GET with redirects followed by hand, each one checked; the auth header stays on its host."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        response = session.get(
            current,
            headers={**headers, **auth_headers(current)},
            stream=True,
            timeout=timeout,
            allow_redirects=False,
        )
        location = response.headers.get("Location")
        if response.status_code not in REDIRECT_STATUS or not location:
            return response
        response.close()
        target = urljoin(current, location)
        check_redirect(url, target, policy)
        current = target
    raise DownloadError(f"{redact_url(url)}: more than {MAX_REDIRECTS} redirects")


def _remaining(deadline: float, url: str, policy: RetryPolicy) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DownloadError(
            f"{redact_url(url)}: not finished within the download deadline "
            f"({policy.deadline_s:g} s)"
        )
    return left


def _range_start(content_range: str) -> int | None:
    """First byte offset of a `Content-Range: bytes START-END/SIZE` header, None if unreadable."""
    unit, _, spec = content_range.strip().partition(" ")
    start, _, _ = spec.partition("-")
    return int(start) if unit == "bytes" and start.isdigit() else None


def _too_big(url: str, size: int, policy: RetryPolicy) -> DownloadError:
    return DownloadError(
        f"{redact_url(url)}: {size} bytes, more than the download limit of {policy.max_bytes} "
        "bytes (raise max_bytes if the file is genuine)"
    )


def _attempt(
    url: str, part: Path, session: requests.Session, policy: RetryPolicy, deadline: float
) -> None:
    shown = redact_url(url)
    have = part.stat().st_size if part.exists() else 0
    # identity: the bytes on disk are the object's bytes, so a Range offset means the same thing.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    left = _remaining(deadline, url, policy)
    timeout = (min(policy.connect_timeout_s, left), min(policy.read_timeout_s, left))
    try:
        response = _get(url, session, headers, policy, timeout)
    # `from None`: the library's own message names the URL's query; a printed traceback (a KFP
    # task's log) must show only the redacted one.
    except (requests.ConnectionError, requests.Timeout) as error:
        raise TransientDownloadError(
            f"{shown}: {type(error).__name__}: {redact_text(str(error))}"
        ) from None
    except requests.RequestException as error:  # an invalid URL, too many redirects, ...
        raise DownloadError(f"{shown}: {type(error).__name__}: {redact_text(str(error))}") from None
    with response:
        resumed, have = _check_response(shown, response, part, have)
        _write_body(url, response, part, (have, resumed), policy, deadline)


def _check_response(
    shown: str, response: requests.Response, part: Path, have: int
) -> tuple[bool, int]:
    """Refuse error statuses (transient ones to be retried); (resumed, bytes already on disk)."""
    if response.status_code == 416 and have:
        # Our partial file is no prefix of the current object: start again.
        part.unlink()
        raise TransientDownloadError(f"{shown}: range not satisfiable, restarting")
    if response.status_code in TRANSIENT_STATUS:
        raise TransientDownloadError(f"{shown}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise DownloadError(f"{shown}: HTTP {response.status_code} {response.reason}")
    if response.status_code != 206:
        return False, 0
    start = _range_start(response.headers.get("Content-Range", ""))
    if start != have:
        part.unlink()
        raise TransientDownloadError(
            f"{shown}: asked for bytes from {have}, got range start {start}, restarting"
        )
    log.info("download_resumed", url=shown, offset=have)
    return True, have


def _write_body(
    url: str,
    response: requests.Response,
    part: Path,
    resume: tuple[int, bool],
    policy: RetryPolicy,
    deadline: float,
) -> None:
    """Append (resumed) or write the body to `part` within the size cap and the deadline."""
    shown, (have, resumed) = redact_url(url), resume
    expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and have + int(expected) > policy.max_bytes:
        raise _too_big(url, have + int(expected), policy)
    received = 0
    try:
        with open(part, "ab" if resumed else "wb") as handle:
            # read1 hands over whatever has arrived, so the bytes received before a broken
            # connection reach the disk and the next attempt resumes after them
            # (iter_content would drop a partly filled chunk).
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
                received += len(chunk)
                if have + received > policy.max_bytes:
                    raise _too_big(url, have + received, policy)
                _remaining(deadline, url, policy)
                handle.write(chunk)
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
            f"{shown}: connection broken after {have + received} bytes ({redact_text(str(error))})"
        ) from error
    except OSError as error:
        if error.errno in NO_SPACE_ERRNOS:
            raise DownloadError(
                f"{shown}: no space left while writing {part} ({error.strerror})"
            ) from error
        raise DownloadError(f"{shown}: cannot write {part}: {error.strerror}") from error
    if expected is not None and received < int(expected):
        raise TransientDownloadError(
            f"{shown}: truncated body, got {have + received} of {have + int(expected)} bytes"
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
    deadline = time.monotonic() + policy.deadline_s
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientDownloadError),
        wait=tenacity.wait_exponential_jitter(initial=policy.initial_wait_s, max=policy.max_wait_s),
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_before_delay(policy.deadline_s),
        before_sleep=lambda state: log.warning(
            "download_retry",
            url=redact_url(url),
            attempt=state.attempt_number,
            error=str(state.outcome.exception()),
        ),
        reraise=True,
    )
    try:
        retrying(_attempt, url, part, session, policy, deadline)
    except TransientDownloadError as error:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        attempts = retrying.statistics.get("attempt_number", policy.attempts)
        raise DownloadError(f"{error} (gave up after {attempts} attempts)") from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    os.replace(part, dest)
    return dest
