"""The sample-data registry: pinned public originals whose hashes match the local copies."""

import hashlib
import re
import shutil

import pytest

from conftest import SHARED_DATA, locate_real_data
from tilefuse import data

SHARED_README = SHARED_DATA / "README.md"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(data.REGISTRY))
def test_registry_hash_matches_the_shared_copy(name):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no {SHARED_DATA} to compare the tilefuse.data registry with")
    path = SHARED_DATA / name
    assert path.is_file(), f"{path} is listed in tilefuse.data but missing"
    entry = data.REGISTRY[name]
    assert _sha(path) == entry.sha256, (
        f"{path} differs from its published original {entry.url} (size {path.stat().st_size} B): "
        "the local copy is damaged or was replaced"
    )


def test_registry_covers_every_shared_file():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no {SHARED_DATA} to compare the tilefuse.data registry with")
    local = {
        str(p.relative_to(SHARED_DATA))
        for p in SHARED_DATA.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert local == set(data.REGISTRY)


def test_urls_are_pinned_to_the_commits_the_data_readme_names():
    if not SHARED_README.is_file():
        pytest.skip(f"no {SHARED_README}")
    readme = SHARED_README.read_text()
    for entry in data.REGISTRY.values():
        m = re.fullmatch(
            r"https://raw\.githubusercontent\.com/([\w.-]+/[\w.-]+)/([0-9a-f]{40})/(.+)", entry.url
        )
        assert m, entry.url
        repo, commit, _ = m.groups()
        assert repo in readme, f"{repo} not in the data README"
        assert commit in readme, f"{entry.name}: commit {commit} not in the data README"
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)


# the fallback path: no ../shared/data, files come through pooch into the cache


def _network_from(root, served):
    """A pooch downloader that serves ``served`` files (by registry URL) from ``root``."""
    by_url = {data.REGISTRY[n].url: n for n in served}

    def download(url, output_file, pooch_obj):
        shutil.copyfile(root / by_url[url], output_file)

    return download


def _good_subset(n=3):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no {SHARED_DATA} to act as the network")
    good = [k for k, f in sorted(data.REGISTRY.items()) if _sha(SHARED_DATA / k) == f.sha256]
    picks = [k for k in good if k.endswith((".xml", ".nd2", ".tif"))]
    return {k: data.REGISTRY[k] for k in picks[::7][:n]}


def test_absent_shared_folder_falls_back_to_the_verified_cache(tmp_path, monkeypatch):
    subset = _good_subset()
    monkeypatch.setattr(data, "REGISTRY", subset)
    monkeypatch.setenv("TILEFUSE_DATA_DIR", str(tmp_path / "cache"))
    root, reason = locate_real_data(
        tmp_path / "no-shared-here", downloader=_network_from(SHARED_DATA, subset)
    )
    assert reason == ""
    assert root == tmp_path / "cache"
    for name, entry in subset.items():
        assert _sha(root / name) == entry.sha256

    # a second call finds them cached: no download at all
    def refuse(*a):
        raise AssertionError("downloaded again")

    assert locate_real_data(tmp_path / "no-shared-here", downloader=refuse)[0] == root


def test_offline_without_shared_folder_skips_naming_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEFUSE_DATA_DIR", str(tmp_path / "cache"))

    def offline(url, output_file, pooch_obj):
        raise ConnectionError(f"no route to {url}")

    root, reason = locate_real_data(tmp_path / "absent", downloader=offline)
    assert root is None
    assert "tilefuse.data registry" in reason
    assert str(tmp_path / "absent") in reason
    assert "ConnectionError" in reason


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(tmp_path, monkeypatch):
    subset = _good_subset(1)
    monkeypatch.setattr(data, "REGISTRY", subset)
    monkeypatch.setenv("TILEFUSE_DATA_DIR", str(tmp_path / "cache"))
    (name,) = subset

    def tampered(url, output_file, pooch_obj):
        with open(output_file, "wb") as f:
            f.write(b"not the original")

    with pytest.raises(ValueError, match="SHA256"):
        data.fetch(name, downloader=tampered)
    assert not (tmp_path / "cache" / name).exists()
    root, reason = locate_real_data(tmp_path / "absent", downloader=tampered)
    assert root is None
    assert "tilefuse.data" in reason


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError, match="not a tilefuse sample file"):
        data.fetch("nd2/nope.nd2")


def test_verify_reports_missing_and_changed_files(tmp_path):
    name = "jp2/uint16.j2k"
    assert data.verify(tmp_path)[name] == "missing"
    (tmp_path / "jp2").mkdir()
    (tmp_path / name).write_bytes(b"x")
    assert data.verify(tmp_path)[name].startswith(f"sha256 {hashlib.sha256(b'x').hexdigest()}")
