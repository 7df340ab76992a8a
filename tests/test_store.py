import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import backdate
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

    first = store.get_or_build(key, build)
    assert not first.cached and (first.folder / "data.txt").read_text() == "hello"
    assert first.info == {"n": 1} and first.manifest["inputs"]["config"] == {"x": 1}
    assert first.manifest == json.loads((first.folder / "manifest.json").read_text()) == store.manifest(key)
    again = ArtifactStore(tmp_path).get_or_build(key, build)  # a new run: the manifest is read back and verified
    assert again.cached and len(calls) == 1
    assert again.folder == first.folder and again.manifest == first.manifest


def test_failed_build_leaves_nothing(tmp_path: Path):
    store = ArtifactStore(tmp_path)
    key = stage_key("train", 1, {})

    def build(out: Path):
        (out / "half.bin").write_text("partial")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        store.get_or_build(key, build)
    assert not store.has(key)
    # Only the stage's lock file stays (removing it could let two builders in; it holds no data).
    assert [p.name for p in (tmp_path / "train").iterdir()] == [f".{key.key}.lock"]


def test_force_and_no_cache_recompute_once_per_run(tmp_path: Path):
    key = stage_key("score", 1, {})
    ArtifactStore(tmp_path).get_or_build(key, lambda out: None)
    forced = ArtifactStore(tmp_path, force={"score"})
    assert not forced.get_or_build(key, lambda out: None).cached
    assert forced.get_or_build(key, lambda out: None).cached  # recomputed once in this run, then shared
    assert not ArtifactStore(tmp_path, use_cache=False).get_or_build(key, lambda out: None).cached


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


@pytest.mark.parametrize("where", ["under a regular file", "/proc/self", "over a folder"])
def test_a_write_that_cannot_land_raises_and_leaves_no_temporary_file(tmp_path: Path, where: str):
    """Places that refuse a file to every user, root included (CI runs as root, where chmod refuses nothing)."""
    (tmp_path / "file").write_text("kept")
    (tmp_path / "folder" / "inside").mkdir(parents=True)
    target = {"under a regular file": tmp_path / "file" / "a.json",  # ENOTDIR
              "/proc/self": Path("/proc/self/spd-bench-probe.json"),  # procfs takes no new files
              "over a folder": tmp_path / "folder"}[where]  # the temporary file is written, the rename fails
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert (tmp_path / "file").read_text() == "kept" and [p.name for p in (tmp_path / "folder").iterdir()] == ["inside"]


# ---- integrity: a cached stage is reused only when it is what its manifest says ----------------
KEY = stage_key("sample", 1, {"x": 1})


def build_two_files(out: Path) -> dict:
    (out / "rows.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n')
    (out / "nested").mkdir()
    (out / "nested" / "weights.bin").write_bytes(bytes(range(256)))
    return {"n": 4}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    """A cache holding KEY, and the stage's folder."""
    return tmp_path, ArtifactStore(tmp_path).get_or_build(KEY, build_two_files).folder


def reopen(cache: Path, **options) -> tuple[ArtifactStore, list[str]]:
    """A fresh store on ``cache`` (a new run), with the notices it gives."""
    notices: list[str] = []
    return ArtifactStore(cache, notice=notices.append, **options), notices


def test_manifest_records_size_and_hash_of_every_file(built):
    _, path = built
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert set(files) == {"rows.jsonl", "nested/weights.bin"}
    assert files["nested/weights.bin"]["size"] == 256
    assert files["nested/weights.bin"]["sha256"] == "40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880"


def overwrite_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "a file deleted": (lambda p: (p / "rows.jsonl").unlink(), "rows.jsonl is missing"),
    "truncated at a line boundary": (
        lambda p: (p / "rows.jsonl").write_text('{"a": 1}\n'), "rows.jsonl changed size (9 bytes, 36 when written)"),
    "same size, other bytes": (lambda p: overwrite_same_size(p / "nested" / "weights.bin"), "nested/weights.bin changed content (sha256 differs from the one recorded)"),
    "manifest not JSON": (lambda p: (p / "manifest.json").write_text("{garbage"), "manifest.json is not valid JSON"),
    "manifest without files": (lambda p: (p / "manifest.json").write_text('{"key": "x", "info": {}}'), "manifest.json lists no files"),
    "manifest deleted": (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_stage_is_rebuilt_with_a_one_line_notice(built, corruption: str):
    cache, path = built
    corrupt, problem = CORRUPTIONS[corruption]
    corrupt(path)
    store, notices = reopen(cache)
    result = store.get_or_build(KEY, build_two_files)
    assert not result.cached and result.folder == path
    assert notices == [f"stage sample/{KEY.key}: {problem}; rebuilding"]
    assert (path / "rows.jsonl").read_text().count("\n") == 4 and result.info == store.manifest(KEY)["info"] == {"n": 4}
    assert reopen(cache)[0].get_or_build(KEY, build_two_files).cached  # the rebuilt stage verifies


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_without_rebuild_a_corrupt_stage_stops_with_one_line(built, corruption: str):
    cache, path = built
    corrupt, problem = CORRUPTIONS[corruption]
    corrupt(path)
    store, notices = reopen(cache, rebuild=False)
    with pytest.raises(UserError) as caught:
        store.get_or_build(KEY, lambda out: pytest.fail("rebuilt despite rebuild=False"))
    message = str(caught.value)
    assert "\n" not in message and not notices
    assert message.startswith(f"stage sample/{KEY.key}: {problem}; ")
    assert "--no-rebuild" in message and str(path) in message


def test_garbage_whose_hash_matches_is_still_caught_by_parsing(built):
    """A manifest rewritten to match garbage (say, by a faulty builder) still does not reach a reader."""
    cache, path = built
    garbage = b'{"a": 1}\n{"a": \n'
    (path / "rows.jsonl").write_bytes(garbage)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["rows.jsonl"] = {"size": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    store, notices = reopen(cache)
    result = store.get_or_build(KEY, build_two_files)
    assert not result.cached and len(notices) == 1 and "rows.jsonl is unreadable (JSONDecodeError" in notices[0]


def test_manifest_outside_a_build_is_verified_too(built):
    cache, path = built
    (path / "rows.jsonl").unlink()
    with pytest.raises(UserError, match="rows.jsonl is missing"):
        reopen(cache)[0].manifest(KEY)


# ---- leftovers of killed builds -----------------------------------------------------------------
KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from spd_bench.store import ArtifactStore, atomic_write_text, stage_key

def build(out):
    atomic_write_text(out / "done.jsonl", "{}\\n")
    (out / "half.bin").write_bytes(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)

ArtifactStore(Path(sys.argv[1])).get_or_build(stage_key("train", 1, {"n": int(sys.argv[2])}), build)
"""


def killed_build(cache: Path, n: int) -> Path:
    """The temporary folder a build killed mid-way leaves (its process is gone, its lock with it)."""
    before = set((cache / "train").glob(".*")) if (cache / "train").exists() else set()
    result = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(cache), str(n)], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    (left,) = set((cache / "train").glob(".*.tmp-*")) - before
    return left


def test_leftovers_older_than_this_process_are_removed_younger_ones_kept(tmp_path: Path):
    old, fresh = killed_build(tmp_path, 1), killed_build(tmp_path, 2)
    backdate(old)
    stage = ArtifactStore(tmp_path).get_or_build(stage_key("train", 1, {"n": 3}), build_two_files).folder
    write_tmp_old, write_tmp_fresh = stage / ".rows.jsonl.k3x9a0q1.tmp", stage.parent / ".manifest.json.zz81bq2m.tmp"
    for leftover in (write_tmp_old, write_tmp_fresh):
        leftover.write_text("half")
    backdate(write_tmp_old)
    ArtifactStore(tmp_path)
    assert not old.exists() and not write_tmp_old.exists()
    assert fresh.exists() and write_tmp_fresh.exists()  # may be another process's build in flight
    assert (fresh / "half.bin").read_bytes() == b"partial"
    assert (stage / "rows.jsonl").exists()


def test_an_old_folder_whose_build_is_alive_is_kept(tmp_path: Path):
    """A build that started before this process and still runs holds its stage's lock."""
    seen = []

    def build(out: Path) -> None:
        backdate(out)
        ArtifactStore(tmp_path)  # a second run opening the same cache mid-build
        seen.append(out.exists())

    ArtifactStore(tmp_path).get_or_build(stage_key("train", 1, {}), build)
    assert seen == [True]
