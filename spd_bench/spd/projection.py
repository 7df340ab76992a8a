"""Phase 2 of SPD: project keys and values onto the capability subspace while generating.

Two equivalent forms. Forward hooks replace each target k_proj / v_proj output y by P y
(``y @ P``, P being symmetric) and are removed when the context exits. Folding edits the
weights instead, W <- P W and b <- P b, which is exact because the projection acts before
RoPE; a folded model costs nothing extra and runs in any inference engine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from spd_bench.spd.extract import Projectors
from spd_bench.spd.kv_layout import base_linear, kv_modules
from spd_bench.errors import UserError


def _targets(model: nn.Module, projectors: Projectors) -> list[tuple[nn.Module, torch.Tensor]]:
    """(module to project, P) pairs, after checking the projectors fit this model."""
    modules = kv_modules(model)
    pairs = []
    for layer, by_kind in sorted(projectors.matrices.items()):
        if not 0 <= layer < len(modules):
            raise UserError(
                f"projectors name layer {layer} but the model has layers 0..{len(modules) - 1}; "
                "they were extracted from a different model"
            )
        for kind, matrix in sorted(by_kind.items()):
            module = modules[layer].proj(kind)
            width = base_linear(module).out_features
            if tuple(matrix.shape) != (width, width):
                raise UserError(
                    f"layer {layer} {kind}_proj has width {width} but its projector is "
                    f"{tuple(matrix.shape)}; the projectors were extracted from a different model"
                )
            pairs.append((module, matrix))
    return pairs


def _project_output(matrix: torch.Tensor) -> Callable:
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        if output.dtype != matrix.dtype:  # e.g. under autocast
            return output @ matrix.to(output.dtype)
        return output @ matrix

    return hook


@contextmanager
def projected(model: nn.Module, projectors: Projectors) -> Iterator[nn.Module]:
    """Within the block, every target k_proj / v_proj output is projected; hooks always go away.

    On a PEFT model the hook sits on the LoRA wrapper, so the adapter's contribution is
    projected as well.
    """
    handles = []
    try:
        for module, matrix in _targets(model, projectors):
            weight = base_linear(module).weight
            hook = _project_output(matrix.to(device=weight.device, dtype=weight.dtype))
            handles.append(module.register_forward_hook(hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _linears_to_fold(module: nn.Module) -> list[nn.Linear]:
    """The base linear plus, on a LoRA wrapper, each adapter's B (its output side).

    y = W x + b + s B A x, so P y = (P W) x + P b + s (P B) A x: folding B keeps a LoRA model
    exact. Variants that are not linear in B (DoRA) and other adapter types are refused.
    """
    if not hasattr(module, "base_layer"):
        return [base_linear(module)]
    if not hasattr(module, "lora_B") or getattr(module, "lora_variant", {}):
        raise UserError(
            f"cannot fold a projection into a {type(module).__name__} adapter layer; only plain LoRA folds. "
            "Merge the adapter first (merge_and_unload) or use the hook form (projected)"
        )
    return [base_linear(module), *module.lora_B.values()]


def _fold_linear(linear: nn.Linear, matrix: torch.Tensor) -> None:
    """W <- P W and b <- P b, computed in float64 and stored back in the layer's dtype."""
    for param in (linear.weight, linear.bias):
        if param is not None:
            p = matrix.to(device=param.device, dtype=torch.float64)
            param.copy_((p @ param.to(torch.float64)).to(param.dtype))


def fold_projection(model: nn.Module, projectors: Projectors) -> nn.Module:
    """Fold the projection into the k_proj / v_proj weights in place; returns ``model``.

    The original weights are gone afterwards: use ``folded_copy`` to keep them.
    """
    with torch.no_grad():
        for module, matrix in _targets(model, projectors):
            for linear in _linears_to_fold(module):
                _fold_linear(linear, matrix)
    return model


def folded_copy(model: nn.Module, projectors: Projectors) -> nn.Module:
    """A deep copy of ``model`` with the projection folded in; ``model`` stays untouched."""
    _targets(model, projectors)  # refuse mismatched projectors before paying for the copy
    return fold_projection(copy.deepcopy(model), projectors)
