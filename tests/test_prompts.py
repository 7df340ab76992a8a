"""Prompt formats: plain text, or the model's chat template applied once, everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from spd_bench.errors import UserError
from spd_bench.models import load_model, load_tokenizer
from spd_bench.prompts import render_items

TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


@pytest.fixture
def chat_model(model_cache: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "chat-model"
    shutil.copytree(load_model("tiny-llama", model_cache).path, folder)
    tokenizer = load_tokenizer(folder)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def test_render_wraps_prompts_and_keeps_answers(chat_model: Path):
    items = [{"id": "a", "prompt": "Q: 1 + 1 =", "answer": " 2"}]
    rendered = render_items(items, load_tokenizer(chat_model), "chat")
    assert rendered[0]["prompt"] == "<|user|>Q: 1 + 1 =<|assistant|>" and rendered[0]["answer"] == " 2"
    assert items[0]["prompt"] == "Q: 1 + 1 ="
    assert render_items(items, None, "plain") is items


def test_chat_without_a_template_is_refused(model_cache: Path):
    with pytest.raises(UserError, match="chat template"):
        render_items([{"id": "a", "prompt": "x"}], load_model("tiny-llama", model_cache).tokenizer, "chat")


def test_run_in_chat_format_records_it(chat_model: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = subprocess.run(
        spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "--quiet", "run", "--model", str(chat_model), "--methods", "base",
                      "--tasks", "arith", "--output", str(out), "--cache-dir", str(tmp_path / "cache"),
                      "--no-leaderboard", "--set", "prompt_format=chat"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (record_file,) = (out / "records").rglob("base.json")
    record = json.loads(record_file.read_text())
    assert record["eval_settings"]["prompt_format"] == "chat"
    docs = list((tmp_path / "cache" / "scratch").glob("docs-*.jsonl"))
    prompts = [json.loads(line)["prompt"] for doc in docs for line in doc.read_text().splitlines()]
    assert prompts and all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in prompts)


BOS_TEMPLATE = "{{ bos_token }}" + TEMPLATE


@pytest.mark.parametrize("tokenizer_adds_bos", [True, False])
def test_a_template_that_writes_bos_gives_exactly_one(chat_model: Path, tokenizer_adds_bos: bool):
    from tokenizers.processors import TemplateProcessing

    tokenizer = load_tokenizer(chat_model)
    tokenizer.chat_template = BOS_TEMPLATE
    if tokenizer_adds_bos:  # as Llama's tokenizers do: BOS on every encode with special tokens
        bos = tokenizer.bos_token
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)])
    assert (tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id) == tokenizer_adds_bos
    (rendered,) = render_items([{"id": "a", "prompt": "Q: 1 + 1 ="}], tokenizer, "chat")
    ids = tokenizer(rendered["prompt"], add_special_tokens=True)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_auto_format_is_chat_with_a_template_and_plain_without():
    from spd_bench.prompts import resolve_format

    assert resolve_format("auto", True, "m") == "chat"
    assert resolve_format("auto", False, "m") == "plain"
    assert resolve_format("plain", True, "m") == "plain"
    with pytest.raises(UserError, match="prompt_format=plain"):
        resolve_format("chat", False, "m")


def test_the_saved_template_file_is_found_and_kept_by_the_hub_download(chat_model: Path):
    from huggingface_hub.utils import filter_repo_objects

    from spd_bench.model_info import has_chat_template
    from spd_bench.models import SNAPSHOT_PATTERNS

    assert has_chat_template(chat_model)
    saved = sorted(p.name for p in chat_model.iterdir())
    # The same filter snapshot_download applies to a repository's file list.
    kept = set(filter_repo_objects(saved, allow_patterns=SNAPSHOT_PATTERNS))
    assert "chat_template.jinja" in saved  # where transformers writes the template
    assert {"chat_template.jinja", "config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= kept


def test_run_defaults_to_the_chat_template_when_the_model_has_one(chat_model: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = subprocess.run(
        spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "run", "--quiet", "--model", str(chat_model), "--methods", "base",
                      "--tasks", "arith", "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--limit", "3",
                      "--no-leaderboard"),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (record_file,) = (out / "records").rglob("base.json")
    record = json.loads(record_file.read_text())
    assert record["eval_settings"]["prompt_format"] == "chat"
    assert record["config"]["prompt_format"] == "auto"
