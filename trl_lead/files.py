"""What the package writes to disk: files and folders moved into place whole, and the cache directory.

Standard library only (no torch, no numpy), so `envs/` and the benchmarks use it without importing a model stack.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

CACHE_ENV_VAR = "TRL_LEAD_CACHE"
_TEMP_SUFFIX = ".tmp"


def cache_dir_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: `path` if given, else `$TRL_LEAD_CACHE`, else `~/.cache/trl_lead`."""
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "trl_lead").expanduser()


def _temp_beside(path: Path, create: Callable[[Path], Any]) -> tuple[Path, Any]:
    """Create a hidden, unused `.<name>.<random>.tmp` beside `path` with `create`; returns its path and result."""
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        try:
            return temp, create(temp)
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """
    Open a temporary file beside `path` for writing; on success flush it to disk and rename it to `path`.

    A reader (or a resume after a crash) sees the old file or the whole new one, never part of one. The file gets the
    permissions of an ordinary new file (`0o666` less the umask, e.g. `0o644`), not `tempfile`'s private `0o600`. If
    the block raises, the temporary file is removed and `path` is left as it was.

    Args:
        path (`str` or `os.PathLike`): The file to write; its folder is created if missing.
        mode (`str`, *optional*, defaults to `"w"`): `"w"` (text, UTF-8) or `"wb"` (bytes).

    Example:
    ```python
    with atomic_write("out/state.npz", "wb") as f:
        np.savez(f, x=x)
    ```
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r}: atomic_write writes new files, use 'w' (text) or 'wb' (bytes)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    temp, fd = _temp_beside(path, lambda name: os.open(name, flags, 0o666))  # the umask applies, as for open()
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike[str], keep_existing: bool = False) -> Iterator[Path]:
    """
    Yield a new temporary folder beside `path` to fill; on success rename it to `path`.

    The folder gets ordinary permissions (`0o777` less the umask). If the block raises, the temporary folder is
    removed and `path` is left as it was.

    Args:
        path (`str` or `os.PathLike`): The folder to create; its parent is created if missing.
        keep_existing (`bool`, *optional*, defaults to `False`):
            What happens to a `path` that exists when the block ends. `False`: it is replaced (deleted just before the
            rename). `True`: it is kept and the new folder discarded, for cache entries whose content is fixed by
            their name, when another process finished the same entry first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp, _ = _temp_beside(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield temp
        if path.exists() and not keep_existing:
            shutil.rmtree(path)
        try:
            os.replace(temp, path)
        except OSError:
            if not (keep_existing and path.exists()):  # a non-empty `path` refuses the rename: keep it
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
