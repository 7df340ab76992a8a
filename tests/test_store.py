import os
from pathlib import Path

import pytest

from spd_bench.errors import UserError
from spd_bench.store import ArtifactStore, atomic_write_text, stage_key


def test_key_depends_on_config_inputs_and_version():
    base = stage_key("sample", 1, {"t": 0.7}, {"model": "m"})
    assert base.key == stage_key("sample", 1, {"t": 0.7}, {"model": "m"}).key
    assert base.key != stage_key("sample", 2, {"t": 0.7}, {"model": "m"}).key
    assert base.key != stage_key("sample", 1, {"t": 0.8}, {"model": "m"}).key
    assert base.key != stage_key("sample", 1, {"t": 0.7}, {"model": "n"}).key


def test_build_once_then_reuse_with_manifest(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    key = stage_key("sample", 1, {"x": 1})
    calls = []

    def build(out: Path):
        calls.append(1)
        (out / "data.txt").write_text("hello")
        return {"n": 1}

    path, cached = store.get_or_build(key, build)
    assert not cached and (path / "data.txt").read_text() == "hello"
    assert store.manifest(key)["info"] == {"n": 1} and store.manifest(key)["inputs"]["config"] == {"x": 1}
    _, cached = store.get_or_build(key, build)
    assert cached and len(calls) == 1


def test_failed_build_leaves_nothing(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    key = stage_key("train", 1, {})

    def build(out: Path):
        (out / "half.bin").write_text("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        store.get_or_build(key, build)
    assert not store.has(key)
    assert list((tmp_path / "train").iterdir()) == []


def test_force_and_no_cache_recompute_once_per_run(tmp_path: Path):
    key = stage_key("score", 1, {})
    ArtifactStore(tmp_path).get_or_build(key, lambda out: None)
    forced = ArtifactStore(tmp_path, force={"score"})
    _, cached = forced.get_or_build(key, lambda out: None)
    assert not cached
    _, cached = forced.get_or_build(key, lambda out: None)
    assert cached  # recomputed once in this run, then shared
    _, cached = ArtifactStore(tmp_path, use_cache=False).get_or_build(key, lambda out: None)
    assert not cached


def test_unwritable_cache_is_a_user_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="--cache-dir"):
        ArtifactStore(blocker / "cache")


def test_atomic_write_replaces_whole_file(tmp_path: Path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(OSError):
                atomic_write_text(target, "x")
    finally:
        os.chmod(tmp_path, 0o700)
