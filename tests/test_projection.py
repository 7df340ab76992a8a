"""Phase 2: hooked and folded projection agree, the KV cache lies in the subspace, hooks go away."""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config  # noqa: E402
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # noqa: E402

from spd_bench.spd.extract import Projectors, random_projectors  # noqa: E402
from spd_bench.spd.kv_layout import kv_modules  # noqa: E402
from spd_bench.spd.projection import fold_projection, folded_copy, projected  # noqa: E402
from spd_bench.errors import UserError  # noqa: E402
from tiny_models import KV_WIDTH, random_ids, tiny_model  # noqa: E402  (tests/ is on sys.path under pytest)

RANK = 12


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def generate(model, ids: torch.Tensor, new_tokens: int = 6):
    return model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        return_dict_in_generate=True,
    )


def identity_projectors(layers: list[int]) -> Projectors:
    eye = torch.eye(KV_WIDTH, dtype=torch.float64)
    full = {"k": KV_WIDTH, "v": KV_WIDTH}
    matrices = {layer: {"k": eye, "v": eye} for layer in layers}
    return Projectors(matrices, ranks={i: full for i in layers}, dims={i: full for i in layers})


def assert_no_hooks(model) -> None:
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def outside(matrix: torch.Tensor, rows: torch.Tensor) -> float:
    """Largest component of ``rows`` (last dim d) outside the range of the projector."""
    complement = torch.eye(matrix.shape[0], dtype=torch.float64) - matrix
    return float((rows.double() @ complement).abs().max())


def kv_cache(output):
    """generate's cache: ``past_key_values`` (transformers < 5.20) or ``cache`` (newer)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def test_identity_projection_leaves_generation_token_for_token_identical():
    model = tiny_model("llama")
    ids = random_ids(7, seed=0, batch=3)
    plain = generate(model, ids, new_tokens=10)
    with projected(model, identity_projectors([0, 1])):
        hooked = generate(model, ids, new_tokens=10)
    assert torch.equal(plain.sequences, hooked.sequences)
    for before, after in zip(kv_cache(plain).layers, kv_cache(hooked).layers, strict=True):
        assert torch.equal(before.keys, after.keys) and torch.equal(before.values, after.values)
    with projected(model, random_projectors(model, [0, 1], rank=RANK)):  # the hooks do act
        assert not torch.equal(generate(model, ids, new_tokens=10).sequences, plain.sequences)


@pytest.mark.parametrize("layout", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize(("layers", "project"), [([0, 1], "both"), ([1], "k"), ([0], "v")])
def test_hooked_and_folded_models_give_the_same_logits(layout, layers, project):
    model = tiny_model(layout)
    proj = random_projectors(model, layers, rank=RANK, project=project, seed=1)
    ids = random_ids(12, seed=2, batch=2)
    original = logits_of(model, ids)
    with projected(model, proj):
        hooked = logits_of(model, ids)
    folded = logits_of(folded_copy(model, proj), ids)
    assert (hooked - original).abs().max() > 1e-2, "the projection must change something"
    torch.testing.assert_close(folded, hooked, atol=2e-5, rtol=1e-5)


def undo_rope(model, keys: torch.Tensor) -> torch.Tensor:
    """Cached keys [B, heads, T, hd] rotated back to k_proj coordinates [B, T, heads*hd]."""
    positions = torch.arange(keys.shape[2])[None].expand(keys.shape[0], -1)
    cos, sin = model.model.rotary_emb(keys, positions)
    _, unrotated = apply_rotary_pos_emb(keys, keys, cos, -sin)  # rotation by -theta
    return unrotated.transpose(1, 2).reshape(keys.shape[0], keys.shape[2], -1)


def flat(cached: torch.Tensor) -> torch.Tensor:
    return cached.transpose(1, 2).reshape(cached.shape[0], cached.shape[2], -1)


@pytest.mark.parametrize("form", ["hooks", "folded"])
@pytest.mark.parametrize("layout", ["llama", "qwen2"])
def test_generation_cache_lies_in_the_subspace(layout, form):
    model = tiny_model(layout)
    proj = random_projectors(model, [1], rank=RANK, seed=3)
    p_k, p_v = proj.matrices[1]["k"], proj.matrices[1]["v"]
    ids = random_ids(5, seed=4, batch=2)
    runner = folded_copy(model, proj) if form == "folded" else model
    captured = []
    with projected(model, proj) if form == "hooks" else nullcontext():
        # registered after the projection hook, so it sees the projected k_proj output
        handle = kv_modules(runner)[1].k_proj.register_forward_hook(lambda _m, _a, out: captured.append(out))
        out = generate(runner, ids, new_tokens=5)
        handle.remove()
    layer = kv_cache(out).layers[1]
    pre_rope = torch.cat(captured, dim=1)  # prompt pass, then one position per decoding step
    assert pre_rope.shape == (2, layer.keys.shape[2], KV_WIDTH)
    assert outside(p_k, pre_rope) < 1e-5
    assert outside(p_v, flat(layer.values)) < 1e-5
    torch.testing.assert_close(undo_rope(model, layer.keys), pre_rope, atol=1e-5, rtol=1e-5)
    assert outside(p_k, undo_rope(model, layer.keys)) < 1e-4
    untouched = kv_cache(out).layers[0]  # layer 0 is not projected: its values leave the subspace
    assert outside(p_v, flat(untouched.values)) > 1e-2


def test_model_is_exactly_the_original_after_the_context_even_on_error():
    model = tiny_model("qwen2")
    proj = random_projectors(model, [0, 1], rank=RANK)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    ids = random_ids(9, seed=5, batch=2)
    original = logits_of(model, ids)
    with projected(model, proj) as inside:
        assert inside is model
        assert any(module._forward_hooks for module in model.modules())
    assert_no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with projected(model, proj):
            raise RuntimeError("boom")
    assert_no_hooks(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(logits_of(model, ids), original)


def test_folding_edits_in_place_and_folded_copy_keeps_the_original():
    model = tiny_model("qwen2")
    proj = random_projectors(model, [1], rank=RANK, project="k", seed=6)
    p = proj.matrices[1]["k"].float()
    k_proj = model.model.layers[1].self_attn.k_proj
    weight, bias = k_proj.weight.detach().clone(), k_proj.bias.detach().clone()
    v_weight = model.model.layers[1].self_attn.v_proj.weight.detach().clone()

    copied = folded_copy(model, proj)
    assert torch.equal(k_proj.weight, weight) and torch.equal(k_proj.bias, bias)
    assert copied.model.layers[1].self_attn.k_proj.weight is not k_proj.weight

    assert fold_projection(model, proj) is model
    torch.testing.assert_close(k_proj.weight, p @ weight, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(k_proj.bias, p @ bias, atol=1e-6, rtol=1e-6)
    assert torch.equal(model.model.layers[1].self_attn.v_proj.weight, v_weight)  # project="k" only
    assert torch.equal(copied.model.layers[1].self_attn.k_proj.weight, k_proj.weight)
    assert_no_hooks(model)


def lora_model(seed: int = 7, **extra):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], **extra)
    model = get_peft_model(tiny_model("qwen2"), config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.3)  # a trained adapter: its contribution must be projected too
    return model.eval()


def test_peft_model_hooks_and_folding_project_the_adapter_too():
    model = lora_model()
    proj = random_projectors(model, [0, 1], rank=RANK, seed=8)
    ids = random_ids(10, seed=9, batch=2)
    with projected(model, proj):
        hooked = logits_of(model, ids)
    merged = copy.deepcopy(model).merge_and_unload()
    with projected(merged, proj):
        merged_hooked = logits_of(merged, ids)
    torch.testing.assert_close(hooked, merged_hooked, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(logits_of(folded_copy(model, proj), ids), hooked, atol=2e-5, rtol=1e-5)
    assert_no_hooks(model)


def test_folding_refuses_adapters_that_are_not_plain_lora():
    model = lora_model(use_dora=True)
    proj = random_projectors(model, [1], rank=RANK, project="v")
    with pytest.raises(UserError, match="merge_and_unload"):
        folded_copy(model, proj)


def test_projectors_from_another_model_are_refused():
    model = tiny_model("llama")
    deeper = random_projectors(tiny_model("llama", layers=4), [3], rank=RANK)
    with pytest.raises(UserError, match="layer 3"):
        with projected(model, deeper):
            pass
    narrow = Projectors({0: {"k": torch.eye(16, dtype=torch.float64)}}, {0: {"k": 16}}, {0: {"k": 16}})
    with pytest.raises(UserError, match="width 32"):
        fold_projection(model, narrow)
    assert_no_hooks(model)


def test_unsupported_architecture_fails_at_once():
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(UserError, match="supported layouts: .*llama"):
        with projected(gpt2, identity_projectors([0])):
            pass
