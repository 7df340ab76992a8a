"""Model folders verified like stages (built-in models, converted GGUF models), and a GGUF model's bad input as one
line with the fix, exit 2, nothing written (no real model needed: small stand-in files)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import spd_bench_cmd
from spd_bench.errors import UserError
from spd_bench.gguf_models import SMOLLM2_135M_Q4, model_folder
from spd_bench.store import MANIFEST, publish_verified_folder, verify_folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_files(folder: Path) -> None:
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)


def test_verified_folder_is_built_once_and_rebuilt_after_any_change(tmp_path: Path):
    final = tmp_path / "models" / "m"
    builds, notices = [], []

    def build(folder: Path) -> None:
        builds.append(folder)
        build_files(folder)

    def publish() -> Path:
        return publish_verified_folder(final, build, what="model m", notice=notices.append)

    assert publish() == final and len(builds) == 1 and verify_folder(final) is None
    assert publish() == final and len(builds) == 1 and not notices  # reused, verified
    listed = json.loads((final / MANIFEST).read_text())["files"]
    assert set(listed) == {"config.json", "weights.bin"}

    damages = {
        "scaled": lambda: (final / "weights.bin").write_bytes(bytes(2 * b % 256 for b in (final / "weights.bin").read_bytes())),
        "truncated": lambda: (final / "weights.bin").write_bytes((final / "weights.bin").read_bytes()[:100]),
        "missing": lambda: (final / "config.json").unlink(),
        "extra": lambda: (final / "other.safetensors").write_bytes(b"x"),
        "manifest": lambda: (final / MANIFEST).write_text("{"),
    }
    for count, (name, damage) in enumerate(damages.items(), start=2):
        damage()
        assert verify_folder(final) is not None, name
        assert publish() == final and len(builds) == count, name
        assert verify_folder(final) is None and notices[-1].startswith("model m:") and notices[-1].endswith("rebuilding")
    assert not [p for p in final.parent.iterdir() if ".tmp-" in p.name]


def test_verified_folder_replaces_a_symlink_to_a_bad_folder_and_follows_the_umask(tmp_path: Path):
    bad = tmp_path / "elsewhere"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    final = tmp_path / "models" / "m"
    final.parent.mkdir()
    final.symlink_to(bad)
    old = os.umask(0o002)
    try:
        publish_verified_folder(final, build_files, what="model m", notice=lambda message: None)
    finally:
        os.umask(old)
    assert not final.is_symlink() and verify_folder(final) is None and (bad / "config.json").exists()
    assert all(p.stat().st_mode & 0o777 == 0o664 for p in final.iterdir())


def fake_spec(tmp_path: Path, gguf_bytes: bytes) -> tuple[object, Path]:
    """A GGUF model spec whose wheel (in the mirror cache) holds ``gguf_bytes``, hashes pinned."""
    mirrors = tmp_path / "cache" / "mirrors"
    mirrors.mkdir(parents=True)
    wheel = mirrors / "fake_gguf_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/model.gguf", gguf_bytes)
    spec = dataclasses.replace(
        SMOLLM2_135M_Q4, name="fake-model", package="fake-gguf-pkg", version="1.0", wheel_sha256=sha256(wheel),
        member="fake/model.gguf", gguf_sha256=hashlib.sha256(gguf_bytes).hexdigest())
    return spec, tmp_path / "cache"


def test_a_gguf_transformers_cannot_read_is_one_line_and_nothing_is_published(tmp_path: Path):
    spec, cache = fake_spec(tmp_path, b"GGUF" + b"\0" * 64)
    with pytest.raises(UserError, match=r"model fake-model: transformers cannot read model.gguf .*not supported"):
        model_folder(spec, cache, progress=lambda message: None)
    assert not [p for p in (cache / "models").iterdir() if not p.name.endswith(".lock")]


def test_a_wheel_whose_hash_differs_is_refused_and_deleted(tmp_path: Path):
    spec, cache = fake_spec(tmp_path, b"GGUF")
    spec = dataclasses.replace(spec, wheel_sha256="0" * 64)
    with pytest.raises(UserError, match=r"does not match its pinned sha256 \(deleted\).*spd-bench prefetch --model fake-model"):
        model_folder(spec, cache, progress=lambda message: None)
    assert not list((cache / "mirrors").glob("*.whl")) and not (cache / "models").exists()


def test_a_gguf_whose_hash_differs_is_refused(tmp_path: Path):
    spec, cache = fake_spec(tmp_path, b"GGUF")
    spec = dataclasses.replace(spec, gguf_sha256="0" * 64)
    with pytest.raises(UserError, match=r"fake/model.gguf in fake_gguf_pkg-1.0-py3-none-any.whl does not match"):
        model_folder(spec, cache, progress=lambda message: None)


def test_no_network_and_no_cache_is_one_line_exit_2_and_nothing_written(tmp_path: Path):
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "none")}
    cache, out = tmp_path / "cache", tmp_path / "out"
    done = subprocess.run(spd_bench_cmd("run", "--model", SMOLLM2_135M_Q4.name, "--methods", "base", "--tasks", "synth_math",
                                        "--cache-dir", str(cache), "--output", str(out)),
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and SMOLLM2_135M_Q4.name in lines[0] and "prefetch --model" in lines[0], lines
    assert not cache.exists() and not out.exists()


@pytest.mark.parametrize("damage", ["scaled", "truncated"])
def test_a_changed_built_in_model_is_rebuilt_with_a_notice_and_keeps_its_key(tmp_path: Path, damage: str,
                                                                            capsys: pytest.CaptureFixture[str]):
    import torch
    from safetensors.torch import load_file, save_file

    from spd_bench.models import resolve_model_path

    folder, _, key = resolve_model_path("tiny-llama", tmp_path)
    weights = folder / "model.safetensors"
    if damage == "scaled":
        save_file({name: tensor * 2 for name, tensor in load_file(weights).items()}, weights, metadata={"format": "pt"})
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    again, _, rebuilt_key = resolve_model_path("tiny-llama", tmp_path)
    assert again == folder and rebuilt_key == key and verify_folder(folder) is None
    notice = capsys.readouterr().err
    assert "model tiny-llama:" in notice and "model.safetensors changed" in notice and "rebuilding" in notice
    assert torch.equal(load_file(weights)["model.embed_tokens.weight"],
                       load_file(again / "model.safetensors")["model.embed_tokens.weight"])
