"""Model loading through every layer: built-in, local folder, and the hub client (from a local hub cache)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spd_bench.errors import UserError
from spd_bench.models import load_model, resolve_device_dtype


@pytest.mark.parametrize("name, kv_bias", [("tiny-llama", False), ("tiny-qwen2", True)])
def test_builtin_tiny_models_load_with_their_layout(model_cache: Path, name: str, kv_bias: bool):
    loaded = load_model(name, model_cache, "cpu", "float32")
    attention = loaded.model.model.layers[0].self_attn
    assert (attention.k_proj.bias is not None) == kv_bias
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert loaded.key.startswith(name + "@") and loaded.source == "built-in"
    # a locally trained tokenizer keeps its digit splitting even under a Qwen2 config
    assert len(loaded.tokenizer("12345", add_special_tokens=False)["input_ids"]) == 5


def test_local_folder_is_keyed_by_content(model_cache: Path, tmp_path: Path):
    source = load_model("tiny-llama", model_cache).path
    copy = tmp_path / "my-model"
    shutil.copytree(source, copy)
    first = load_model(str(copy), model_cache)
    assert first.source == "local" and first.key.split("@")[1] == load_model("tiny-llama", model_cache).key.split("@")[1]
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert load_model(str(copy), model_cache).key != first.key


def test_missing_folder_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path / "nothing"), tmp_path)


def test_auto_device_on_cpu_picks_float32():
    assert resolve_device_dtype("auto", "auto") == ("cpu", "float32")
    with pytest.raises(UserError, match="dtype"):
        resolve_device_dtype("cpu", "int3")


def test_hub_id_loads_through_the_hub_client_from_a_local_hub_cache(model_cache: Path, tmp_path: Path):
    """The real hub code path: snapshot_download resolves a cached snapshot offline."""
    source = load_model("tiny-llama", model_cache).path
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from pathlib import Path\n"
        "from spd_bench.models import load_model\n"
        "from spd_bench.errors import UserError\n"
        f"m = load_model('acme/tiny-llama', Path({str(tmp_path)!r}))\n"
        "print(m.key, m.source)\n"
        "try:\n    load_model('acme/not-there', Path('.'))\nexcept UserError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"acme/tiny-llama@{commit} hub" in result.stdout
    assert "ERR cannot load model 'acme/not-there'" in result.stdout


def test_a_cached_hub_model_is_planned_and_prefetched_offline(model_cache: Path, tmp_path: Path):
    """Plan-time model info and `prefetch --model` go through the hub client's cache, offline."""
    source = load_model("tiny-llama", model_cache).path
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "snapshots" / commit / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from pathlib import Path\n"
        "from spd_bench.model_info import model_info\n"
        f"info = model_info('acme/tiny-chat', Path({str(tmp_path)!r}))\n"
        "print(info.n_layers, info.kv_widths, info.chat_template, sorted(info.linear_modules)[:2])\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[0] == "2 (32, 32) True ['down_proj', 'gate_proj']"
    spd_bench = str(Path(sys.executable).parent / "spd-bench")
    fetched = subprocess.run([spd_bench, "prefetch", "--model", "acme/tiny-chat"], capture_output=True, text=True,
                             env=env, timeout=120, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert f"in the hub cache at {repo / 'snapshots' / commit}" in " ".join(fetched.stdout.split())
    missing = subprocess.run([spd_bench, "prefetch", "--model", "acme/not-there"], capture_output=True, text=True,
                             env=env, timeout=120, cwd=tmp_path)
    assert missing.returncode == 2 and "acme/not-there" in missing.stderr


def test_a_model_folder_is_hashed_once_per_process_until_a_file_changes(model_cache: Path, tmp_path: Path):
    from spd_bench import models

    folder = tmp_path / "model"
    shutil.copytree(load_model("tiny-llama", model_cache).path, folder)
    misses = models._hash_files.cache_info().misses
    first = models.resolve_model_path(str(folder), tmp_path)[2]
    assert models.resolve_model_path(str(folder), tmp_path)[2] == first
    assert models._hash_files.cache_info().misses == misses + 1
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 2 '))
    assert models.resolve_model_path(str(folder), tmp_path)[2] != first  # content changed: hashed again
    assert models._hash_files.cache_info().misses == misses + 2
