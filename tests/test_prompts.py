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
