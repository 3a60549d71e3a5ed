"""Local paths given as sources are read only below configured roots.

A source parameter (`--source`, `--url`) may name a local file or folder; on a shared cluster that
must not reach `/proc/self/environ`, a mounted secret or another user's files. The roots are,
unless configured (`local_roots`, or `TL_LOCAL_SOURCE_ROOTS`, paths separated by `:`): the working
folder (unless it is `/`), the Debian dataset folder `/usr/share/datasets`, Keras' cache
(`$KERAS_HOME`, `~/.keras`, `/tmp/.keras`) and the temporary folder. Paths are compared after
resolving symbolic links, so a link cannot lead out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from components.common.config import ConfigError
from components.common.redact import redact_url

ENV_VAR = "TL_LOCAL_SOURCE_ROOTS"
DEBIAN_DATASETS_DIR = "/usr/share/datasets"


def default_roots() -> list[Path]:
    """The roots used when none are configured."""
    roots = [Path(DEBIAN_DATASETS_DIR), Path(tempfile.gettempdir()), Path("~/.keras").expanduser()]
    roots.append(Path("/tmp/.keras"))
    if os.environ.get("KERAS_HOME"):
        roots.append(Path(os.environ["KERAS_HOME"]).expanduser())
    cwd = Path.cwd()
    if cwd != Path(cwd.anchor):
        roots.append(cwd)
    return roots


def configured_roots(roots: Sequence[str] | None = None) -> list[Path]:
    """`roots` if any, else `$TL_LOCAL_SOURCE_ROOTS`, else `default_roots()`; resolved."""
    if not roots and os.environ.get(ENV_VAR):
        roots = [part for part in os.environ[ENV_VAR].split(os.pathsep) if part]
    paths = [Path(root).expanduser() for root in roots] if roots else default_roots()
    return [path.resolve() for path in paths]


def check_local(path: str | Path, what: str, roots: Sequence[str] | None = None) -> Path:
    """Return `path` if it resolves below one of the roots, else raise ConfigError naming it."""
    if "://" in str(path):  # a URL of a scheme no step reads (ftp://, s3://, ...)
        raise ConfigError(
            f"{what} {redact_url(str(path))}: unsupported scheme; use http(s)://, gs:// or a "
            "local path"
        )
    resolved = Path(path).expanduser().resolve()
    allowed = configured_roots(roots)
    if any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        return Path(path)
    raise ConfigError(
        f"{what} {path}: local paths are read only below {', '.join(map(str, allowed))}; "
        f"move the files there or add a folder to {ENV_VAR} (or the step's local_roots)"
    )


def local_roots_option(what: str):
    """The `local_roots` config field of a step whose `what` may be a local path."""
    from components.common.config import names, option

    return option(
        (),
        f"comma-separated folders a local {what} may lie in; empty: ${ENV_VAR}, else the working "
        "folder, /usr/share/datasets, Keras' cache and the temp folder",
        parse=names,
        aliases=("--local-root",),
    )
