"""Where each decoder layer keeps its key/value projections, and which layers SPD targets.

SPD works in the coordinates of the ``k_proj`` / ``v_proj`` outputs (before RoPE, after the
bias), so every other engine module asks this one for those linear layers. Architectures are
described by one string each in ``LAYOUTS``; supporting a new decoder is one added line.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from spd_bench.errors import UserError

#: model_type -> "<path to the decoder layer list, * = layer index>.<attention>:<k attr>,<v attr>"
LAYOUTS: dict[str, str] = {
    "llama": "model.layers.*.self_attn:k_proj,v_proj",
    "mistral": "model.layers.*.self_attn:k_proj,v_proj",
    "mixtral": "model.layers.*.self_attn:k_proj,v_proj",
    "qwen2": "model.layers.*.self_attn:k_proj,v_proj",
    "qwen2_moe": "model.layers.*.self_attn:k_proj,v_proj",
    "qwen3": "model.layers.*.self_attn:k_proj,v_proj",
    "qwen3_moe": "model.layers.*.self_attn:k_proj,v_proj",
    "gemma": "model.layers.*.self_attn:k_proj,v_proj",
    "gemma2": "model.layers.*.self_attn:k_proj,v_proj",
    "gemma3_text": "model.layers.*.self_attn:k_proj,v_proj",
    "olmo": "model.layers.*.self_attn:k_proj,v_proj",
    "olmo2": "model.layers.*.self_attn:k_proj,v_proj",
    "granite": "model.layers.*.self_attn:k_proj,v_proj",
    "starcoder2": "model.layers.*.self_attn:k_proj,v_proj",
    "phi": "model.layers.*.self_attn:k_proj,v_proj",
    "cohere": "model.layers.*.self_attn:k_proj,v_proj",
    "stablelm": "model.layers.*.self_attn:k_proj,v_proj",
    "helium": "model.layers.*.self_attn:k_proj,v_proj",
    "exaone4": "model.layers.*.self_attn:k_proj,v_proj",
}

LAYER_CHOICES = ("last_mid", "last_mid_1based", "last", "mid", "all")


@dataclass(frozen=True)
class KVModules:
    """The modules of one decoder layer that SPD hooks: on a PEFT model, the LoRA wrappers."""

    layer: int
    attention: nn.Module
    k_proj: nn.Module
    v_proj: nn.Module

    def proj(self, kind: str) -> nn.Module:
        """``k_proj`` for "k", ``v_proj`` for "v"."""
        return self.k_proj if kind == "k" else self.v_proj


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (the model itself otherwise).

    PEFT replaces the targeted linears in place, so the unwrapped model still holds the LoRA
    wrappers, which is what hooks must see to project the adapter's contribution too.
    """
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def base_linear(module: nn.Module) -> nn.Linear:
    """The plain ``nn.Linear`` under any stack of PEFT wrappers (the module itself otherwise)."""
    while hasattr(module, "base_layer"):
        module = module.base_layer
    if not isinstance(module, nn.Linear):
        raise UserError(
            f"expected an nn.Linear key/value projection, found {type(module).__name__}; "
            "SPD needs separate linear k_proj/v_proj layers (fused qkv layouts are not supported)"
        )
    return module


def _unsupported(model_type: str, reason: str) -> UserError:
    known = ", ".join(sorted(LAYOUTS))
    return UserError(
        f"{reason}; supported layouts: {known}. For a decoder whose attention has k_proj/v_proj, add "
        f'LAYOUTS["{model_type}"] = "model.layers.*.self_attn:k_proj,v_proj" '
        "(spd_bench.spd.kv_layout), adjusting the path to the model"
    )


def _parse_layout(model_type: str, layout: str) -> tuple[list[str], list[str], str, str]:
    path, sep, names = layout.partition(":")
    parts = path.split(".")
    k_name, comma, v_name = names.partition(",")
    if not sep or not comma or parts.count("*") != 1 or not k_name or not v_name:
        raise _unsupported(model_type, f"layout {layout!r} for {model_type!r} is malformed")
    star = parts.index("*")
    return parts[:star], parts[star + 1 :], k_name.strip(), v_name.strip()


def _walk(obj: object, attrs: list[str]) -> object:
    for attr in attrs:
        obj = getattr(obj, attr)
    return obj


def kv_modules(model: nn.Module) -> list[KVModules]:
    """Every decoder layer's attention, k_proj and v_proj modules, in layer order."""
    inner = unwrap_peft(model)
    model_type = getattr(getattr(inner, "config", None), "model_type", None) or type(inner).__name__
    layout = LAYOUTS.get(model_type)
    if layout is None:
        raise _unsupported(model_type, f"model type {model_type!r} has no key/value layout")
    to_layers, to_attention, k_name, v_name = _parse_layout(model_type, layout)
    try:
        layers = list(_walk(inner, to_layers))  # type: ignore[call-overload]
        found = []
        for index, layer in enumerate(layers):
            attention = _walk(layer, to_attention)
            found.append(KVModules(index, attention, getattr(attention, k_name), getattr(attention, v_name)))
    except (AttributeError, TypeError) as exc:
        raise _unsupported(model_type, f"layout {layout!r} does not match this {model_type!r} model ({exc})") from exc
    if not found:
        raise _unsupported(model_type, f"layout {layout!r} finds no decoder layers")
    for entry in found:  # fail now on fused or non-linear projections, not mid-run
        base_linear(entry.k_proj)
        base_linear(entry.v_proj)
    return found


def resolve_layers(spec: str | list[int], n_layers: int) -> list[int]:
    """Turn a layer choice into sorted 0-based indices.

    The paper names "a middle and the last layer", {floor(L/2), L} in its 1-based notation, which
    reads two ways. ``last_mid`` (the default) takes floor(L/2) as a 0-based index: {L//2, L-1}
    (Qwen2.5-0.5B, L=24: layers 12 and 23). ``last_mid_1based`` converts the 1-based pair
    literally: {floor(L/2)-1, L-1} (layers 11 and 23). With L=2 ``last_mid`` is the single layer 1.
    A string of comma-separated integers is read as an explicit list (handy on a command line).
    """
    if isinstance(spec, str):
        named = {
            "last_mid": [n_layers // 2, n_layers - 1],
            "last_mid_1based": [max(n_layers // 2 - 1, 0), n_layers - 1],
            "last": [n_layers - 1],
            "mid": [n_layers // 2],
            "all": list(range(n_layers)),
        }
        if spec in named:
            return sorted(set(named[spec]))
        try:
            spec = [int(part) for part in spec.split(",")]
        except ValueError:
            raise UserError(
                f"layers {spec!r} is not one of {', '.join(LAYER_CHOICES)} or a list of layer indices"
            ) from None
    if not spec:
        raise UserError("layers is empty; give at least one 0-based layer index or last_mid")
    for index in spec:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_layers:
            raise UserError(f"layer {index!r} is out of range: the model has layers 0..{n_layers - 1}")
    return sorted(set(spec))
