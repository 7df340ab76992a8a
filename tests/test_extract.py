"""Phase 1: gradients through hooks, the aligned loss's shift, Gram eigenvectors, projector files."""

from __future__ import annotations

import gc
import os
import weakref

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from spd_bench.spd.extract import (  # noqa: E402
    GramAccumulator,
    example_gradients,
    extract_projectors,
    load_projectors,
    nll_at,
    random_projectors,
    resolve_rank,
    save_projectors,
    target_positions,
)
from spd_bench.spd.kv_layout import kv_modules  # noqa: E402
from spd_bench.errors import UserError  # noqa: E402
from spd_bench.spans import EncodedExample  # noqa: E402
from tiny_models import KV_WIDTH, random_ids, tiny_model  # noqa: E402  (tests/ is on sys.path under pytest)


def make_example(length: int, prompt_len: int, span: list[int] | None, seed: int) -> EncodedExample:
    ids = random_ids(length, seed).tolist()
    mask = None if span is None else [t in span for t in range(length)]
    return EncodedExample(input_ids=ids, prompt_len=prompt_len, span_mask=mask)


def all_targets(model):
    return {(entry.layer, kind): entry.proj(kind) for entry in kv_modules(model) for kind in ("k", "v")}


def frozen(model):
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def reference_aligned_loss(logits: torch.Tensor, ids: list[int], span: list[int]) -> torch.Tensor:
    """Written out term by term: token t is predicted by the logits at position t-1."""
    terms = [-torch.log_softmax(logits[t - 1].double(), -1)[ids[t]] for t in span]
    return torch.stack(terms).mean()


def outputs_with_grad(model, ids: list[int]):
    """k/v outputs that require grad via an embedding-output hook (a different route than extract's)."""
    outputs = {}
    handles = [model.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out.requires_grad_(True))]
    for key, module in all_targets(model).items():
        handles.append(module.register_forward_hook(lambda _m, _a, out, key=key: outputs.__setitem__(key, out)))
    logits = model(input_ids=torch.tensor([ids])).logits[0]
    for handle in handles:
        handle.remove()
    return logits, outputs


@pytest.mark.parametrize("layout", ["llama", "qwen2"])
def test_hook_gradients_equal_autograd_of_the_aligned_loss(layout):
    model = frozen(tiny_model(layout))
    span = [9, 10, 12]
    example = make_example(16, 8, span, seed=1)
    grads, n_targets = example_gradients(model, all_targets(model), example, "aligned")
    logits, outputs = outputs_with_grad(model, example.input_ids)
    keys = sorted(outputs)
    expected = torch.autograd.grad(reference_aligned_loss(logits, example.input_ids, span), [outputs[k] for k in keys])
    assert n_targets == 3 and sorted(grads) == keys
    for key, reference in zip(keys, expected, strict=True):
        assert grads[key].shape == (16, KV_WIDTH)
        assert reference[0].abs().max() > 1e-4, "the comparison must not be between zeros"
        torch.testing.assert_close(grads[key], reference[0].to(grads[key].dtype), rtol=1e-4, atol=1e-6)


def rms_norm_in_float64(self, hidden):
    """LlamaRMSNorm without its float32 cast, so a float64 model is float64 throughout."""
    return self.weight * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


@pytest.mark.parametrize(("layer", "kind"), [(0, "k"), (1, "v")])
def test_gradient_matches_a_finite_difference(layer, kind, monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    monkeypatch.setattr(LlamaRMSNorm, "forward", rms_norm_in_float64)
    model = frozen(tiny_model("llama", dtype=torch.float64))
    span = [10, 11]
    example = make_example(14, 6, span, seed=2)
    grads, _ = example_gradients(model, all_targets(model), example, "aligned")
    grad = grads[layer, kind]
    t, j = divmod(int(grad.abs().argmax()), grad.shape[1])
    module = kv_modules(model)[layer].proj(kind)

    def loss_with_nudge(eps: float) -> float:
        def nudge(_m, _a, out):
            out = out.clone()
            out[0, t, j] += eps
            return out

        handle = module.register_forward_hook(nudge)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0]
        handle.remove()
        return float(reference_aligned_loss(logits, example.input_ids, span))

    eps = 1e-6
    numeric = (loss_with_nudge(eps) - loss_with_nudge(-eps)) / (2 * eps)
    assert abs(grad[t, j]) > 1e-3
    assert numeric == pytest.approx(float(grad[t, j]), rel=1e-6)


def test_aligned_loss_predicts_token_t_from_the_prefix_before_it():
    model = frozen(tiny_model("llama"))
    example = make_example(12, 5, [7], seed=3)
    ids = torch.tensor(example.input_ids)
    positions = target_positions(example, "aligned")
    with torch.no_grad():
        full = nll_at(model(input_ids=ids[None]).logits[0], ids, positions)
        prefix_logits = model(input_ids=ids[None, :7]).logits[0, -1]  # sees tokens 0..6 only
    assert float(full) == pytest.approx(float(-torch.log_softmax(prefix_logits, -1)[ids[7]]), rel=1e-5)
    # token 7 is predicted at position 6, so keys and values at positions >= 7 get no gradient
    grads, _ = example_gradients(model, all_targets(model), example, "aligned")
    for grad in grads.values():
        assert torch.all(grad[7:] == 0)
        assert grad[6].abs().max() > 0


def test_target_positions_for_both_losses():
    example = make_example(10, 4, [6, 8], seed=4)
    assert target_positions(example, "aligned").tolist() == [6, 8]
    assert target_positions(example, "full").tolist() == [4, 5, 6, 7, 8, 9]
    whole_answer = make_example(10, 4, None, seed=4)
    assert target_positions(whole_answer, "aligned").tolist() == [4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize(
    ("example", "match"),
    [
        (EncodedExample([5, 6, 7], 3, None), "prompt_len"),
        (EncodedExample([5, 6, 7], 0, None), "prompt_len"),
        (EncodedExample([5, 6, 7], 1, [False, False, False]), "no answer token"),
        (EncodedExample([5, 6, 7], 1, [True, True]), "span_mask has 2"),
    ],
)
def test_bad_calibration_examples_are_user_errors(example, match):
    with pytest.raises(UserError, match=match):
        target_positions(example, "aligned")


def stacked_gradients(model, examples, key):
    targets = all_targets(model)
    return torch.cat([example_gradients(model, targets, ex, "aligned")[0][key].double() for ex in examples])


def test_gram_eigenvectors_span_the_top_singular_subspace():
    model = tiny_model("llama")
    examples = [make_example(14, 6, [9, 12], seed=s) for s in range(3)]
    proj = extract_projectors(model, examples, layers=[0, 1], rank=6)
    stacked = stacked_gradients(frozen(model), examples, (0, "v"))
    _, singular, vh = torch.linalg.svd(stacked, full_matrices=False)
    top = vh[:6].T
    assert singular[5] > 1.01 * singular[6], "needs an eigengap for the subspace to be unique"
    p = proj.matrices[0]["v"]
    torch.testing.assert_close(p, top @ top.T, atol=1e-6, rtol=0)
    energy = float((singular[:6] ** 2).sum() / (singular**2).sum())
    assert proj.energy[0]["v"] == pytest.approx(energy, rel=1e-6)


@pytest.mark.parametrize("layout", ["llama", "qwen2", "mistral"])
def test_projectors_are_symmetric_idempotent_of_the_asked_rank(layout):
    model = tiny_model(layout)
    examples = [make_example(12, 5, [8, 9], seed=s) for s in range(2)]
    proj = extract_projectors(model, examples, layers=[0, 1], rank_fraction=0.3)
    assert proj.layers == [0, 1]
    for layer in (0, 1):
        assert proj.ranks[layer] == {"k": 10, "v": 10}  # round(0.3 * 32) = round(9.6)
        assert proj.dims[layer] == {"k": KV_WIDTH, "v": KV_WIDTH}
        for kind, p in proj.matrices[layer].items():
            assert p.dtype == torch.float64
            torch.testing.assert_close(p, p.T, atol=1e-12, rtol=0)
            torch.testing.assert_close(p @ p, p, atol=1e-10, rtol=0)
            assert int(torch.linalg.matrix_rank(p)) == 10
            assert 10 / 32 < proj.energy[layer][kind] <= 1.0  # gradients are not isotropic
    assert (proj.n_examples, proj.n_tokens, proj.n_target_tokens) == (2, 24, 4)
    assert proj.source == "aligned"


def test_full_rank_captures_all_energy_and_default_rank_is_half():
    model = tiny_model("llama")
    examples = [make_example(12, 5, [8], seed=7)]
    full = extract_projectors(model, examples, layers=[1], rank=KV_WIDTH, project="k")
    assert full.energy[1]["k"] == pytest.approx(1.0)
    torch.testing.assert_close(full.matrices[1]["k"], torch.eye(KV_WIDTH, dtype=torch.float64), atol=1e-10, rtol=0)
    default = extract_projectors(model, examples, layers=[1], project="v", loss="full")
    assert list(default.matrices[1]) == ["v"] and default.ranks[1]["v"] == KV_WIDTH // 2
    assert default.source == "full" and default.n_target_tokens == 7


def test_extraction_leaves_the_model_as_it_found_it():
    model = tiny_model("qwen2")
    model.train()
    model.lm_head.weight.requires_grad_(False)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():  # the caller's no_grad must not break gradient capture
        extract_projectors(model, [make_example(10, 4, [6], seed=8)], layers=[0, 1])
    assert model.training
    assert not model.lm_head.weight.requires_grad and model.model.embed_tokens.weight.requires_grad
    assert all(param.grad is None for param in model.parameters())
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_peft_wrapped_model_gives_the_plain_models_projectors():
    from peft import LoraConfig, get_peft_model

    examples = [make_example(12, 5, [8, 10], seed=s) for s in range(2)]
    plain = extract_projectors(tiny_model("llama"), examples, layers=[0, 1], rank=8)
    wrapped = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=["k_proj", "v_proj"]))
    lora = extract_projectors(wrapped, examples, layers=[0, 1], rank=8)  # lora_B starts at zero
    for layer in (0, 1):
        for kind in ("k", "v"):
            torch.testing.assert_close(lora.matrices[layer][kind], plain.matrices[layer][kind], atol=1e-6, rtol=0)
    assert all(param.requires_grad for name, param in wrapped.named_parameters() if "lora_" in name)


def test_bfloat16_model_extracts_float64_projectors():
    model = tiny_model("llama", dtype=torch.bfloat16)
    proj = extract_projectors(model, [make_example(12, 5, [8], seed=9)], layers=[1], rank=4)
    p = proj.matrices[1]["k"]
    assert p.dtype == torch.float64
    torch.testing.assert_close(p @ p, p, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "rank 0"),
        ({"rank": KV_WIDTH + 1}, "rank 33"),
        ({"rank_fraction": 0.0}, "rank_fraction"),
        ({"rank_fraction": 1.5}, "rank_fraction"),
        ({"rank_fraction": 0.01}, "rank 0"),
        ({"project": "q"}, "project"),
        ({"loss": "all"}, "loss"),
        ({"layers": [2]}, "layer 2 is out of range"),
    ],
)
def test_bad_options_fail_before_any_model_work(kwargs, match):
    options = {"layers": [1], **kwargs}
    with pytest.raises(UserError, match=match):
        extract_projectors(tiny_model("llama"), [make_example(10, 4, [6], seed=0)], **options)


def test_empty_calibration_set_is_a_user_error():
    with pytest.raises(UserError, match="empty"):
        extract_projectors(tiny_model("llama"), [], layers=[1])


def test_resolve_rank_rounds_half_up():
    assert resolve_rank(32, None, 0.5) == 16
    assert resolve_rank(5, None, 0.5) == 3  # 2.5 rounds up, not to even
    assert resolve_rank(32, 7, 0.5) == 7


def test_gram_accumulation_keeps_no_token_rows():
    accumulator = GramAccumulator()
    rows = torch.randn(5000, 8)
    alive = weakref.ref(rows)
    accumulator.add(rows)
    accumulator.add(torch.randn(3, 2000, 8))
    expected = rows.double().T @ rows.double()
    del rows
    gc.collect()
    assert alive() is None, "the accumulator must not hold on to gradient rows"
    assert accumulator.rows == 11000 and accumulator.gram.shape == (8, 8)
    state = [value for value in vars(accumulator).values() if isinstance(value, torch.Tensor)]
    assert sum(tensor.numel() for tensor in state) == 64
    assert not torch.allclose(accumulator.gram, expected)  # the second batch was added too


def test_projectors_round_trip_through_safetensors(tmp_path):
    model = tiny_model("qwen2")
    proj = extract_projectors(model, [make_example(10, 4, [6, 7], seed=5)], layers=[0, 1], rank=5, project="v")
    path = tmp_path / "proj.safetensors"
    save_projectors(proj, path)
    loaded = load_projectors(path)
    assert loaded.metadata() == proj.metadata()
    assert loaded.layers == [0, 1]
    for layer in (0, 1):
        assert list(loaded.matrices[layer]) == ["v"]
        assert torch.equal(loaded.matrices[layer]["v"], proj.matrices[layer]["v"])


def test_loading_something_else_is_a_user_error(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(UserError, match="does not exist"):
        load_projectors(tmp_path / "missing.safetensors")
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="no SPD projectors"):
        load_projectors(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match="not a safetensors file"):
        load_projectors(garbage)


def test_random_projectors_are_seeded_orthogonal_projectors():
    model = tiny_model("mistral")
    first = random_projectors(model, [0, 1], rank=12, project="both", seed=3)
    again = random_projectors(model, [0, 1], rank=12, project="both", seed=3)
    other = random_projectors(model, [0, 1], rank=12, project="both", seed=4)
    assert first.source == "random" and first.seed == 3 and first.energy == {}
    for layer in (0, 1):
        for kind in ("k", "v"):
            p = first.matrices[layer][kind]
            torch.testing.assert_close(p, p.T, atol=1e-12, rtol=0)
            torch.testing.assert_close(p @ p, p, atol=1e-10, rtol=0)
            assert float(torch.trace(p)) == pytest.approx(12)
            assert torch.equal(p, again.matrices[layer][kind])
            assert not torch.allclose(p, other.matrices[layer][kind])
    assert not torch.allclose(first.matrices[0]["k"], first.matrices[0]["v"])
    assert random_projectors(model, [1], project="k").ranks == {1: {"k": KV_WIDTH // 2}}
    with pytest.raises(UserError):
        random_projectors(model, [1], rank=0)
