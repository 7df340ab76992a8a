"""Locating k_proj/v_proj across layouts (plain and PEFT) and resolving target layers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config  # noqa: E402

from spd_bench.spd.kv_layout import LAYOUTS, base_linear, kv_modules, resolve_layers  # noqa: E402
from spd_bench.errors import UserError  # noqa: E402
from tiny_models import KV_WIDTH, tiny_model  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.mark.parametrize("layout", ["llama", "qwen2", "mistral"])
def test_finds_each_layers_projections(layout):
    model = tiny_model(layout)
    found = kv_modules(model)
    assert [entry.layer for entry in found] == [0, 1]
    for entry in found:
        assert entry.attention is model.model.layers[entry.layer].self_attn
        assert entry.k_proj is entry.attention.k_proj and entry.v_proj is entry.attention.v_proj
        assert entry.proj("k") is entry.k_proj and entry.proj("v") is entry.v_proj
        # grouped-query attention: K/V are narrower than the hidden size
        assert entry.k_proj.out_features == entry.v_proj.out_features == KV_WIDTH
        assert (entry.k_proj.bias is not None) == (layout == "qwen2")


def test_peft_model_exposes_lora_wrappers_and_their_base_linears():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=["k_proj", "v_proj"]))
    found = kv_modules(model)
    assert len(found) == 2
    for entry in found:
        assert hasattr(entry.k_proj, "lora_A"), "hooks must sit on the LoRA wrapper"
        base = base_linear(entry.k_proj)
        assert type(base) is nn.Linear and base is entry.k_proj.base_layer


def test_unsupported_architecture_names_layouts_and_the_line_to_add():
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UserError) as info:
        kv_modules(gpt2)
    message = str(info.value)
    assert "'gpt2'" in message and "llama" in message and "qwen2" in message
    assert 'LAYOUTS["gpt2"] = "model.layers.*.self_attn:k_proj,v_proj"' in message
    assert "\n" not in message


def test_the_suggested_line_makes_a_new_architecture_work(monkeypatch):
    monkeypatch.delitem(LAYOUTS, "mistral")
    model = tiny_model("mistral")
    with pytest.raises(UserError) as info:
        kv_modules(model)
    line = str(info.value).split("add ")[1].split(" (spd_bench")[0]
    exec(line, {"LAYOUTS": LAYOUTS})  # what a user adds for a llama-like decoder
    assert [entry.k_proj for entry in kv_modules(model)] == [layer.self_attn.k_proj for layer in model.model.layers]


def test_a_layout_that_does_not_match_the_model_is_a_user_error(monkeypatch):
    monkeypatch.setitem(LAYOUTS, "llama", "model.blocks.*.attn:k_proj,v_proj")
    with pytest.raises(UserError, match="does not match"):
        kv_modules(tiny_model("llama"))
    monkeypatch.setitem(LAYOUTS, "llama", "model.layers.self_attn")
    with pytest.raises(UserError, match="malformed"):
        kv_modules(tiny_model("llama"))


@pytest.mark.parametrize(
    ("spec", "n_layers", "expected"),
    [
        ("last_mid", 24, [12, 23]),  # paper: {floor(L/2), L} 1-based
        ("last_mid", 5, [2, 4]),
        ("last_mid", 2, [1]),  # mid and last coincide
        ("last_mid", 1, [0]),
        ("last", 24, [23]),
        ("mid", 24, [12]),
        ("all", 3, [0, 1, 2]),
        ([3, 0, 3], 4, [0, 3]),
        ("0,2", 4, [0, 2]),
    ],
)
def test_resolve_layers(spec, n_layers, expected):
    assert resolve_layers(spec, n_layers) == expected


@pytest.mark.parametrize("spec", [[4], [-1], [], "middle", [True], "1,x"])
def test_resolve_layers_rejects_bad_choices(spec):
    with pytest.raises(UserError):
        resolve_layers(spec, 4)
