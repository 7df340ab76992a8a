"""Conformance of every backend to the protocol, run against the Hugging Face backend, the
example ``counting`` backend (tests/fixtures/counting_backend.py) and the vLLM backend (its CPU
build), the last two scored by lm-eval through the generic ``BackendLM``. A new backend passes by
adding its name to ``BACKEND_NAMES``."""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import TESTS
from spd_bench.api import BACKENDS, BASE, AdapterHandle, Backend, GenerationPlan, ProjectedHandle
from spd_bench.backends import load_backend
from spd_bench.backends.hf import HFBackend
from spd_bench.errors import UserError
from spd_bench.registry import load_plugin
from spd_bench.scoring import ScoreSettings
from spd_bench.scoring.lmeval import LMEvalGenerate, LMEvalMultipleChoice
from spd_bench.spans import encode_example
from spd_bench.tasks import TaskSpec

load_plugin(str(TESTS / "fixtures" / "counting_backend.py"))

BACKEND_NAMES = ["hf", "counting", "vllm"]
PROMPTS = ["Q: Ann has 12 apples. She buys 7 more.", "def f(x):\n", "The quick", "Question: What is 7 + 19?\nAnswer:"]
PAIRS = [("Q: Ann has 12 apples. A:", " 12 + 7 = 19. #### 19"), ("def f(x):\n", "    return abs(x)"),
         ("The quick brown", " fox jumps")]
SAMPLED = dict(max_new_tokens=10, temperature=1.0, top_p=0.95, batch_size=2)


@pytest.fixture(scope="module", params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, model_cache: Path) -> Iterator[Backend]:
    """One backend per name for the whole module (a vLLM engine starts as few times as possible)."""
    loaded = BACKENDS.get(request.param).load("tiny-llama", model_cache, "cpu", "float32")
    yield loaded
    getattr(loaded, "close", lambda: None)()  # the next module may start an engine of its own


@pytest.fixture(scope="module")
def hf(model_cache: Path) -> HFBackend:
    return HFBackend.load("tiny-llama", model_cache, "cpu", "float32")


@pytest.fixture(scope="module")
def adapter(hf: HFBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random (non-zero) B, so attaching it changes outputs."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(copy.deepcopy(hf.model), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def projectors(hf: HFBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spd_bench.spd.extract import random_projectors, save_projectors

    path = tmp_path_factory.mktemp("projectors") / "projectors.safetensors"
    save_projectors(random_projectors(hf.model, [0, 1], rank=None, project="both", seed=3, rank_fraction=0.25), path)
    return path


def _greedy(backend: Backend, handle=BASE, **plan) -> list[str]:
    return [texts[0] for texts in backend.generate(handle, PROMPTS, GenerationPlan(max_new_tokens=12, batch_size=3, **plan))]


def test_the_registry_knows_every_backend(backend: Backend):
    assert isinstance(backend, Backend) and backend.name in BACKENDS and BACKENDS.source("hf") == "built-in"
    assert backend.tokenizer is not None and backend.device == "cpu" and backend.dtype == "float32"


def test_close_releases_and_the_backend_serves_again(backend: Backend):
    before = _greedy(backend)
    backend.close()
    backend.close()  # closing twice is harmless
    assert _greedy(backend) == before


def test_backend_options_reach_the_backend(model_cache: Path):
    with pytest.raises(UserError, match="takes no options"):
        load_backend("tiny-llama", model_cache, "cpu", "float32", name="hf", options={"tensor_parallel_size": 1})
    with pytest.raises(UserError, match="no option nonsense"):
        load_backend("tiny-llama", model_cache, "cpu", "float32", name="vllm", options={"nonsense": 1})
    assert load_backend("tiny-llama", model_cache, "cpu", "float32", name="vllm",
                        options={"max_model_len": 64}).max_length(BASE) == 64  # no engine is started


def test_greedy_generation_is_deterministic(backend: Backend):
    first = backend.generate(BASE, PROMPTS, GenerationPlan(max_new_tokens=12, n=2, batch_size=3))
    assert [len(texts) for texts in first] == [2] * len(PROMPTS)
    assert all(a == b for a, b in first)  # greedy: every sample of a prompt is the same
    assert [texts[0] for texts in first] == _greedy(backend)
    assert any(texts[0] for texts in first)


def test_sampling_with_seeds(backend: Backend):
    both = backend.generate(BASE, PROMPTS, GenerationPlan(n=2, seed=7, **SAMPLED))
    again = backend.generate(BASE, PROMPTS, GenerationPlan(n=2, seed=7, **SAMPLED))
    other = backend.generate(BASE, PROMPTS, GenerationPlan(n=1, seed=8, **SAMPLED))
    assert both == again
    assert [texts[0] for texts in both] != [texts[1] for texts in both]
    assert [texts[1] for texts in both] == [texts[0] for texts in other]  # sample k comes from seed + k


def test_stop_sequences_cut_the_completion(backend: Backend):
    free = _greedy(backend)
    # an ASCII character from inside a completion (a random model also emits partial UTF-8 bytes)
    stop = next(c for t in free for c in t[1:] if c.isascii() and c.isalnum())
    stopped = _greedy(backend, stop=(stop,))
    for long, short in zip(free, stopped):
        assert stop not in short
        assert short == (long[: long.index(stop)] if stop in long else long)


def _direct(model: torch.nn.Module, tokenizer, context: str, continuation: str) -> tuple[float, int, bool]:
    encoded = encode_example(tokenizer, context, continuation, add_eos=False)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([encoded.input_ids])).logits[0].double(), dim=-1)
    positions = range(max(encoded.prompt_len, 1), len(encoded.input_ids))
    total = sum(float(logprobs[p - 1, encoded.input_ids[p]]) for p in positions)
    greedy = all(int(logprobs[p - 1].argmax()) == encoded.input_ids[p] for p in positions)
    return total, len(positions), greedy


def test_loglikelihoods_match_a_direct_computation(backend: Backend, hf: HFBackend):
    results = backend.loglikelihood(BASE, PAIRS, batch_size=2)  # padding inside a batch
    for (context, continuation), result in zip(PAIRS, results):
        total, n_tokens, greedy = _direct(hf.model, hf.tokenizer, context, continuation)
        assert result.n_tokens == n_tokens and result.is_greedy == greedy and not result.truncated
        assert result.logprob == pytest.approx(total, rel=1e-4)
    assert backend.loglikelihood(BASE, [("p", "")])[0].n_tokens == 0


def test_an_adapter_changes_outputs_and_is_removed_afterwards(backend: Backend, adapter: Path):
    before = backend.loglikelihood(BASE, PAIRS)
    adapted = backend.loglikelihood(AdapterHandle(adapter), PAIRS)
    assert all(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(before, adapted))
    assert backend.loglikelihood(BASE, PAIRS) == before
    inner = backend if isinstance(backend, HFBackend) else getattr(backend, "inner", None)
    if inner is not None:  # an in-memory HF model; vLLM serves adapters per request
        assert not any("lora" in name for name, _ in inner.model.named_modules())


def test_projection_folded_equals_hooked_and_leaves_the_base_model(backend: Backend, projectors: Path, hf: HFBackend):
    base = backend.loglikelihood(BASE, PAIRS)
    folded = backend.loglikelihood(ProjectedHandle(projectors, "fold"), PAIRS)
    hooks = ProjectedHandle(projectors, "hooks")
    reference: Backend = backend
    if backend.name == "vllm":  # hooks need the HF model object: vLLM refuses them, HF's hooked model is the reference
        with pytest.raises(UserError, match="generation: fold with --backend vllm"):
            backend.loglikelihood(hooks, PAIRS)
        reference = hf
    hooked = reference.loglikelihood(hooks, PAIRS)
    assert [r.logprob for r in folded] == pytest.approx([r.logprob for r in hooked], rel=1e-4)
    assert all(abs(f.logprob - b.logprob) > 1e-3 for f, b in zip(folded, base))
    assert _greedy(backend, ProjectedHandle(projectors, "fold")) == _greedy(reference, hooks)
    assert backend.loglikelihood(BASE, PAIRS) == base


def test_lm_eval_scores_through_the_backend(backend: Backend, tmp_path: Path):
    """lm-eval decides the numbers; the example backend's answers are its own generate / loglikelihood."""
    gen_task = TaskSpec(name="t_numeric", description="", kind="math", scorer="lmeval_generate", data="x:y", stop=("\n",))
    mc_task = TaskSpec(name="mc", description="", kind="multiple_choice", scorer="lmeval_mc", data="x:y")
    gen_items = [{"id": f"g{i}", "prompt": p, "answer": "", "label": "19"} for i, p in enumerate(PROMPTS)]
    mc_items = [{"id": f"m{i}", "prompt": p, "choices": ["a", "b b", "19"], "gold": i % 3, "answer": "", "label": None}
                for i, p in enumerate(PROMPTS)]
    settings = ScoreSettings(batch_size=2, work_dir=tmp_path, max_new_tokens=8)
    generated = LMEvalGenerate().score_model(backend, BASE, gen_task, gen_items, settings)
    chosen = LMEvalMultipleChoice().score_model(backend, BASE, mc_task, mc_items, settings)
    assert set(generated.metrics) >= {"exact_match/flexible-extract", "exact_match/strict-match"}
    assert 0.0 <= chosen.metrics["acc"] <= 1.0 and len(chosen.per_item) == len(mc_items)
    with backend.lm_eval_model(BASE, batch_size=2) as lm:
        from lm_eval.api.model import LM

        assert isinstance(lm, LM)
    if isinstance(backend, HFBackend):
        return
    if hasattr(backend, "calls"):
        assert backend.calls["generate"] >= 1 and backend.calls["loglikelihood"] >= 1
    plan = GenerationPlan(max_new_tokens=8, batch_size=2, stop=("\n",))
    expected = [texts[0] for texts in backend.generate(BASE, PROMPTS, plan)]
    assert [row["response"] for row in generated.per_item] == expected
    for item, row in zip(mc_items, chosen.per_item):
        scores = [r.logprob for r in backend.loglikelihood(BASE, [(item["prompt"], " " + c) for c in item["choices"]])]
        assert row["response"] == max(range(len(scores)), key=scores.__getitem__)


# ---- only the hf backend runs models for outputs ------------------------------------------
PACKAGE = TESTS.parent / "spd_bench"
ALLOWED = PACKAGE / "backends" / "hf.py"
GENERATE_KWARGS = {"input_ids", "max_new_tokens", "do_sample", "generation_config", "attention_mask"}


def _model_calls(path: Path) -> list[str]:
    """HF ``generate`` calls, ``HFLM(...)`` and ``PeftModel.from_pretrained(...)`` in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        text = ast.unparse(func)
        if isinstance(func, ast.Attribute) and func.attr == "generate":
            receiver = func.value
            name = receiver.id if isinstance(receiver, ast.Name) else receiver.attr if isinstance(receiver, ast.Attribute) else ""
            if "model" in name.lower() or GENERATE_KWARGS & {k.arg for k in node.keywords if k.arg}:
                found.append(f"{path.name}:{node.lineno} {text}(")
        elif text.split(".")[-1] == "HFLM" or text.endswith("_make_hflm_class()") or text == "PeftModel.from_pretrained":
            found.append(f"{path.name}:{node.lineno} {text}(")
    return found


EXPORT = PACKAGE / "export.py"


def test_only_the_hf_backend_runs_hf_generate_hflm_or_peft_attach():
    offenders = [call for path in sorted(PACKAGE.rglob("*.py")) if path != ALLOWED for call in _model_calls(path)
                 if not (path == EXPORT and "PeftModel.from_pretrained(" in call)]  # export merges weights: no inference
    assert offenders == []
    inside = " ".join(_model_calls(ALLOWED))
    assert "model.generate(" in inside and "PeftModel.from_pretrained(" in inside and "_make_hflm_class()(" in inside
