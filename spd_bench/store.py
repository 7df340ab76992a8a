"""Content-addressed artifact store for stage outputs.

A stage's key hashes its own config, its inputs' keys and a stage version, so a re-run
recomputes only what changed and never silently reuses a stale result. Each artifact is a
folder built under a temporary name and renamed into place, with a manifest saying what
produced it and the size and sha256 of every file it holds. A cached stage is verified against
its manifest before it is reused: one that fails (a file missing, truncated, overwritten, not
parseable, or a manifest that is not one) is rebuilt, or, with ``rebuild=False``, stops the run.
A crash leaves at most a temporary folder behind, which the next store to open removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from spd_bench.config import stable_hash
from spd_bench.errors import UserError

MANIFEST = "manifest.json"
_IMPORTED = time.time()
_STAGE_TMP = re.compile(r"^\.[0-9a-f]+\.tmp-")  # get_or_build's folders: .<key>.tmp-XXXX
_WRITE_TMP = re.compile(r"^\..+\.[^.]+\.tmp$")  # atomic_write_text's files: .<name>.XXXX.tmp
_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) -> sha256, per process
_PARSE_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the new, never a half.

    The temporary name is unique and opened with "xb" (not mkstemp, whose files are private), so
    the file gets the usual umask permissions and a shared cache stays readable by a team.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def publish_folder(final: Path, build: Callable[[Path], None]) -> Path:
    """Fill a fresh temporary sibling with ``build``, then rename it to ``final``.

    Readers see the whole folder or none of it, a crash leaves only the temporary folder, and
    when another process published ``final`` first, its copy is kept and this one discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the cache may be shared
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_writable(folder: Path, what: str, flag: str) -> None:
    """Prove that ``folder`` can be created and take files, or fail with the flag that picks another.

    Nothing is left behind: a run refused later at plan time must not leave empty folders, so
    the probe goes into the nearest folder that exists and is removed at once.
    """
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what} {folder} is not writable ({exc.strerror or exc}); pass {flag} DIR") from exc


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@dataclass(frozen=True)
class StageKey:
    stage: str
    key: str
    inputs: dict[str, Any]


@dataclass(frozen=True)
class Artifact:
    """A stage in the store: its key (which later stages' keys include), its folder, whether this
    run reused it, and the manifest it was verified against (no second look-up of what it recorded)."""

    key: StageKey
    folder: Path
    cached: bool
    manifest: dict[str, Any]

    @property
    def info(self) -> dict[str, Any]:
        """What the stage's build returned about itself (counts, metrics)."""
        return self.manifest["info"]


def stage_key(stage: str, version: int, config: Any, inputs: dict[str, str] | None = None) -> StageKey:
    """Key = hash(stage name, stage version, own config, input keys)."""
    payload = {"stage": stage, "version": version, "config": config, "inputs": inputs or {}}
    return StageKey(stage=stage, key=stable_hash(payload, length=20), inputs=payload)


# ---- file fingerprints -------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path, stat: os.stat_result) -> tuple[str, int, int, int]:
    return (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _check_format(path: Path) -> None:
    """Parse the formats the pipeline reads, so that garbage whose hash matches is still caught."""
    if path.suffix == ".json":
        json.loads(path.read_bytes())
    elif path.suffix == ".jsonl":
        for line in path.read_bytes().splitlines():
            if line.strip():
                json.loads(line)
    elif path.suffix == ".safetensors":
        _check_safetensors(path)


def _check_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors' bytes."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8:
            raise ValueError("safetensors header runs past the end of the file")
        header = json.loads(handle.read(length))
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    if max(ends, default=0) > size - 8 - length:
        raise ValueError("safetensors tensors run past the end of the file")


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``folder`` but the manifest, by relative path."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        table[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return table


def _remember(folder: Path, table: dict[str, dict[str, Any]]) -> None:
    """Files this process just wrote need no second hashing when the stage is reused."""
    for rel, entry in table.items():
        path = folder / rel
        _DIGESTS[_stat_key(path, path.stat())] = entry["sha256"]


def _file_problem(folder: Path, rel: str, entry: Any) -> str | None:
    """What is wrong with one listed file (size every time; hash and format once per process), or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str):
        return f"{MANIFEST} has a malformed entry for {rel}"
    path = folder / rel
    try:
        stat = path.stat()
    except OSError:
        return f"{rel} is missing"
    if stat.st_size != entry["size"]:
        return f"{rel} changed size ({stat.st_size} bytes, {entry['size']} when written)"
    fingerprint = _stat_key(path, stat)
    known = _DIGESTS.get(fingerprint)  # set when hashed and parsed earlier in this process, unchanged since
    try:
        digest = known or file_sha256(path)
        if digest != entry["sha256"]:
            return f"{rel} changed content (sha256 differs from the one recorded)"
        if known is None:
            _check_format(path)
    except _PARSE_ERRORS as exc:
        return f"{rel} is unreadable ({type(exc).__name__}: {exc})"
    _DIGESTS[fingerprint] = digest
    return None


def _read_manifest(folder: Path, key: StageKey) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when the folder is what its manifest says, else (None, the first problem)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except OSError:
        return None, f"{MANIFEST} is missing"
    except ValueError:
        return None, f"{MANIFEST} is not valid JSON"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None, f"{MANIFEST} lists no files"
    if manifest.get("key") != key.key or not isinstance(manifest.get("info"), dict):
        return None, f"{MANIFEST} does not describe this stage"
    for rel, entry in manifest["files"].items():
        problem = _file_problem(folder, rel, entry)
        if problem:
            return None, problem
    return manifest, None


def _stderr_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def verify_folder(folder: Path) -> str | None:
    """None when ``folder`` holds exactly what its manifest lists (size, sha256, format), else the first problem.

    For folders published outside the stage layout (built-in models): the same checks as a stage's.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except OSError:
        return f"{MANIFEST} is missing"
    except ValueError:
        return f"{MANIFEST} is not valid JSON"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        return f"{MANIFEST} lists no files"
    for rel, entry in manifest["files"].items():
        problem = _file_problem(folder, rel, entry)
        if problem:
            return problem
    listed = set(manifest["files"]) | {MANIFEST}
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                   and p.relative_to(folder).as_posix() not in listed)
    return f"{extra[0]} is not in {MANIFEST}" if extra else None


def publish_verified_folder(final: Path, build: Callable[[Path], None], what: str,
                            notice: Callable[[str], None] = _stderr_notice) -> Path:
    """``final`` when it matches its manifest; else built by ``build`` (one builder across processes,
    under the same lock file as a stage) and published atomically with a manifest of every file.

    A folder that fails verification (a changed, truncated or missing file) is rebuilt with a
    one-line notice: a model's weights are never served unchecked.
    """
    if final.is_dir() and verify_folder(final) is None:
        return final
    with _stage_lock(final):
        if final.is_dir() and verify_folder(final) is None:
            return final  # built by another process while we waited
        if final.is_symlink() or final.exists():
            problem = verify_folder(final) if final.is_dir() else "not a folder"
            notice(f"{what}: {final}: {problem}; rebuilding")
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink()

        def fill(folder: Path) -> None:
            build(folder)
            for file in folder.rglob("*"):  # some writers (safetensors) make private files; a cache may be shared
                if file.is_file():
                    os.chmod(file, 0o666 & ~_umask())
            atomic_write_json(folder / MANIFEST, {
                "what": what, "files": file_table(folder),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "builder": {"host": socket.gethostname(), "pid": os.getpid()},
            })

        publish_folder(final, fill)
    _remember(final, json.loads((final / MANIFEST).read_bytes())["files"])
    return final


# ---- leftovers of killed runs ------------------------------------------------------------------
def process_start_time() -> float:
    """When this process started (wall clock); when this module was imported where /proc is missing."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def _lock_file(final: Path) -> Path:
    """``.<key>.lock`` beside a stage's folder: held by whoever builds that stage."""
    return final.parent / f".{final.name}.lock"


@contextlib.contextmanager
def _stage_lock(final: Path) -> Iterator[None]:
    """Hold the stage's lock file (blocking); released on exit or process death."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_file(final), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise  # a file system without flock: builds are still atomic, maybe done twice
        yield
    finally:
        os.close(fd)


def _build_in_progress(tmp: Path) -> bool:
    """Whether a live build still fills the temporary folder ``.<key>.tmp-*``: its stage's lock is
    held (a lock we can take means its builder is gone)."""
    try:
        fd = os.open(_lock_file(tmp.parent / tmp.name.split(".tmp-", 1)[0].lstrip(".")), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []  # not ours to read (a shared cache): nothing of ours to clean there


def _leftovers(root: Path) -> list[Path]:
    """Temporary stage folders in ``root/<stage>/``, atomic-write files up to two levels down."""
    level1 = [p for p in _listing(root) if p.is_dir() and not p.name.startswith(".")]
    level2 = [p for folder in level1 for p in _listing(folder) if p.is_dir() and not p.name.startswith(".")]
    folders = [p for folder in level1 for p in _listing(folder) if p.is_dir() and _STAGE_TMP.match(p.name)]
    files = [p for folder in [root, *level1, *level2] for p in _listing(folder) if p.is_file() and _WRITE_TMP.match(p.name)]
    return folders + files


def remove_leftovers(root: Path, before: float) -> None:
    """Delete what killed builds left behind: only entries older than ``before`` that no live build holds."""
    for entry in _leftovers(root):
        try:
            if entry.stat().st_mtime >= before or (entry.is_dir() and _build_in_progress(entry)):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # gone already, or not ours to remove: neither blocks the run


class ArtifactStore:
    """Folders under ``root/<stage>/<key>/`` holding a stage's files and ``manifest.json``.

    ``rebuild``: a cached stage that fails verification is rebuilt (with a one-line ``notice``),
    or, when False, stops the run with a UserError naming the stage and the file.
    """

    def __init__(self, root: Path, use_cache: bool = True, force: set[str] | None = None, rebuild: bool = True,
                 notice: Callable[[str], None] = _stderr_notice) -> None:
        self.root = Path(root)
        self.use_cache = use_cache
        self.force = force or set()
        self.rebuild = rebuild
        self.notice = notice
        ensure_writable(self.root, "cache folder", "--cache-dir")
        remove_leftovers(self.root, before=process_start_time())
        self._recomputed: set[str] = set()
        self._manifests: dict[str, dict[str, Any]] = {}  # key -> manifest, verified in this process

    def path(self, key: StageKey) -> Path:
        return self.root / key.stage / key.key

    def has(self, key: StageKey) -> bool:
        """A folder is in place (only a finished build is renamed there; verify() says if it is intact)."""
        return self.path(key).is_dir()

    def reusable(self, key: StageKey) -> bool:
        """Cached and allowed to be reused in this run (not --no-cache, not forced)."""
        if not self.use_cache or key.stage in self.force:
            return key.key in self._recomputed and self.has(key)
        return self.has(key)

    def verify(self, key: StageKey) -> str | None:
        """None when the cached stage matches its manifest, else the first problem found."""
        manifest, problem = _read_manifest(self.path(key), key)
        if manifest is not None:
            self._manifests[key.key] = manifest
        else:
            self._manifests.pop(key.key, None)
        return problem

    def get_or_build(self, key: StageKey, build: Callable[[Path], dict[str, Any] | None]) -> Artifact:
        """The stage's verified artifact, reused when allowed; ``build(tmp_dir)`` fills a fresh folder otherwise.

        One builder per stage key, across processes sharing the cache: a builder holds the
        stage's lock file, the others wait for it and then reuse what it built. The kernel drops
        the lock when its holder dies, so a crashed builder never blocks the others.
        """
        artifact = self._reuse(key, announce=True)
        if artifact is not None:
            return artifact
        with _stage_lock(self.path(key)):
            artifact = self._reuse(key, announce=False)  # built by another process while we waited
            if artifact is not None:
                return artifact
            return Artifact(key=key, folder=self._build(key, build), cached=False, manifest=self._manifests[key.key])

    def _reuse(self, key: StageKey, announce: bool) -> Artifact | None:
        if not self.reusable(key):
            return None
        problem = self.verify(key)
        if problem is None:
            return Artifact(key=key, folder=self.path(key), cached=True, manifest=self._manifests[key.key])
        if announce:
            self._refuse_or_announce(key, problem)
        return None

    def _refuse_or_announce(self, key: StageKey, problem: str) -> None:
        where = f"stage {key.stage}/{key.key}"
        if not self.rebuild:
            raise UserError(f"{where}: {problem}; rerun without --no-rebuild to rebuild it, or delete {self.path(key)}")
        self.notice(f"{where}: {problem}; rebuilding")

    def _build(self, key: StageKey, build: Callable[[Path], dict[str, Any] | None]) -> Path:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key.key}.tmp-"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a team's shared cache needs the umask's rights
        try:
            started = time.time()
            info = build(tmp) or {}
            files = file_table(tmp)
            manifest = {
                "stage": key.stage,
                "key": key.key,
                "inputs": key.inputs,
                "info": info,
                "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.time() - started, 3),
                # who built it: with many processes on one cache (shards, Ray workers), each stage says which one
                "builder": {"host": socket.gethostname(), "pid": os.getpid()},
            }
            atomic_write_json(tmp / MANIFEST, manifest)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _remember(final, files)
        self._manifests[key.key] = json.loads(json.dumps(manifest, default=str))
        self._recomputed.add(key.key)
        return final

    def manifest(self, key: StageKey) -> dict[str, Any]:
        """The stage's manifest, verified (once per process) before anything trusts it."""
        if key.key not in self._manifests:
            problem = self.verify(key)
            if problem is not None:
                raise UserError(f"stage {key.stage}/{key.key}: {problem}; rerun to rebuild it, or delete {self.path(key)}")
        return self._manifests[key.key]
