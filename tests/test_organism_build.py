"""Tokenizer, pretraining and the build of the organism (a smoke build; the full build is not tested)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
import torch

from spd_bench.organism import suite
from spd_bench.organism.build import CHECKS, BuildConfig, build_key, build_organism, run_code_checks
from spd_bench.organism.pretrain import ModelShape, PretrainConfig, lr_at, make_model, pretrain
from spd_bench.organism.tokenizer import train_tokenizer

RESULTS = Path(__file__).resolve().parents[1] / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tok")
    docs = itertools.islice(suite.pretraining_documents(0, 0.0, {"math": 1.0, "code": 1.0, "mc": 1.0}), 2000)
    train_tokenizer((prompt + answer for prompt, answer in docs), folder, vocab_size=800)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder)


def test_tokenizer_has_special_tokens_and_a_small_vocabulary(tokenizer) -> None:
    assert tokenizer.bos_token == "<s>" and tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    assert 300 < len(tokenizer) <= 800
    ids = tokenizer("Q: Ann has 12 pens.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.convert_ids_to_tokens(tokenizer(" 12", add_special_tokens=False)["input_ids"]) == ["Ġ12"]


@pytest.mark.parametrize("family,ood", [(f, o) for f in suite.FAMILIES for o in (False, True)])
def test_prompt_and_answer_tokenize_the_same_apart_and_together(tokenizer, family: str, ood: bool) -> None:
    # lm-eval encodes prompt + answer together and splits; spd-bench encodes them apart.
    for item in suite.items(family, "eval", 100, ood=ood):
        apart = tokenizer(item["prompt"])["input_ids"] + tokenizer(item["answer"], add_special_tokens=False)["input_ids"]
        assert apart == tokenizer(item["prompt"] + item["answer"])["input_ids"]
        assert tokenizer.decode(apart, skip_special_tokens=True) == item["prompt"] + item["answer"]


def test_model_has_the_llama_layout_and_about_a_million_parameters(tokenizer) -> None:
    model = make_model(ModelShape(), tokenizer, seed=0)
    assert type(model).__name__ == "LlamaForCausalLM"
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.out_features == 2 * 32  # two KV heads of width 128 / 4
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert 0.8e6 < sum(p.numel() for p in model.parameters()) < 1.5e6


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    cfg = PretrainConfig(steps=1000, warmup=100, lr=3e-3, final_lr_fraction=0.1)
    assert lr_at(0, cfg) == pytest.approx(3e-5)
    assert lr_at(99, cfg) == pytest.approx(3e-3)
    assert lr_at(550, cfg) == pytest.approx(3e-3 * 0.55)  # halfway through the cosine
    assert lr_at(999, cfg) == pytest.approx(3e-4, rel=1e-3)


def test_pretraining_is_deterministic_for_a_seed(tokenizer) -> None:
    cfg = PretrainConfig(steps=3, batch_size=2, seq_len=128, log_every=1)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        model = make_model(ModelShape(layers=1), tokenizer, seed=seed)
        curve = pretrain(model, tokenizer, cfg, seed=seed)
        assert [point["step"] for point in curve] == [1, 2, 3]
        return model.state_dict()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_code_checks_run_generated_code_safely() -> None:
    item = suite.items("code", "eval", 1)[0]
    right = item["canonical_solution"]
    bodies = [right, "    return None\n", "    while True: pass\n", "    import os; os._exit(3)\n", "    return (\n", right]
    assert run_code_checks([item] * len(bodies), bodies) == [True, False, False, False, False, True]


def test_build_key_changes_with_the_recipe() -> None:
    base = BuildConfig()
    assert build_key(base) == build_key(BuildConfig())
    assert build_key(base) != build_key(BuildConfig(seed=1))
    assert build_key(base) != build_key(BuildConfig(pretrain=PretrainConfig(p_wrong=0.3)))


def test_smoke_build_writes_a_loadable_organism_and_is_reused(tmp_path: Path) -> None:
    messages: list[str] = []
    folder = build_organism(tmp_path, smoke=True, progress=messages.append)
    assert {"config.json", "model.safetensors", "tokenizer.json", "provenance.json"} <= {p.name for p in folder.iterdir()}
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["steps"] == 5 and provenance["seed"] == 0
    assert set(provenance["accuracy"]) == set(CHECKS)
    assert all(0.0 <= value <= 1.0 for value in provenance["accuracy"].values())
    losses = [point["loss"] for point in provenance["loss_curve"]]
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert any("pretraining step 5/5" in m for m in messages)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".organism-") and ".tmp-" in p.name]  # no temp left

    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    assert model.config.vocab_size == len(tok)

    stamp = (folder / "provenance.json").stat().st_mtime_ns
    again: list[str] = []
    assert build_organism(tmp_path, smoke=True, progress=again.append) == folder
    assert again == [] and (folder / "provenance.json").stat().st_mtime_ns == stamp


def test_the_shipped_weights_are_of_the_current_recipe() -> None:
    """Editing the recipe without re-shipping (organism build --from-scratch --ship) fails here."""
    from spd_bench.organism.shipped import shipped_manifest, usable_shipped

    manifest = shipped_manifest()
    assert manifest is not None and manifest["build_key"] == build_key(BuildConfig())
    folder, why_not = usable_shipped(build_key(BuildConfig()))
    assert folder is not None, why_not


def test_the_default_organism_comes_from_the_shipped_weights_intact(tmp_path: Path) -> None:
    from spd_bench.models import resolve_model_path
    from spd_bench.organism.shipped import file_hashes, shipped_manifest

    folder = build_organism(tmp_path)
    manifest = shipped_manifest()
    copied = file_hashes(folder)
    assert {name: copied[name] for name in manifest["files"] if name != "provenance.json"} == {
        name: digest for name, digest in manifest["files"].items() if name != "provenance.json"}
    assert "shipped" in json.loads((folder / "provenance.json").read_text())["origin"]
    # the model's identity (part of every stage key) is the one the committed results were computed with
    committed = json.loads(next(RESULTS.glob("records/organism/*/*.json")).read_text())["provenance"]["model_key"]
    assert resolve_model_path("organism", tmp_path) == (folder, "built-in", committed)


def test_damaged_or_stale_shipped_weights_are_not_used(tmp_path: Path) -> None:
    import shutil

    from spd_bench.organism.shipped import SHIPPED, usable_shipped

    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED, copy)
    key = build_key(BuildConfig())
    assert usable_shipped(key, copy)[0] == copy
    assert "build" in usable_shipped("0" * 16, copy)[1]
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    folder, why_not = usable_shipped(key, copy)
    assert folder is None and "model.safetensors does not match its sha256" in why_not
