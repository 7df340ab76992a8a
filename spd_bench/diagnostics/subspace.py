"""Subspace diagnostics: what a cell's K/V projection does to the model on its training prompts.

Measured on the unprojected Hugging Face model with the prepare stage's projectors, on the first
``PROMPT_LIMIT`` training prompts (a constant, so every method and config is measured on the same
prompts and the cost stays bounded on CPU):

- kept energy: sum ||P x||^2 / sum ||x||^2 over prompt tokens, x a target layer's k_proj or
  v_proj output (the vector the projection acts on), per layer and kind and overall;
- KL(unprojected || projected): the mean over prompt tokens of the KL divergence from the
  unprojected model's next-token distribution to the projected model's (the projection applied
  through ``spd.projection.projected``, the hook form SPD generates with);
- the gradient energy the extraction captured at the chosen rank, carried over from the projectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from spd_bench.spd.extract import Projectors
from spd_bench.spd.kv_layout import kv_modules
from spd_bench.spd.projection import projected

PROMPT_LIMIT = 64  # training prompts measured: the first ones, whatever the method or config


class _EnergyMeter:
    """Running sum ||P x||^2 and sum ||x||^2 of one module's outputs, in float64."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.kept = 0.0
        self.total = 0.0
        self.active = True  # off during the projected pass, whose later layers see projected inputs

    def __call__(self, _module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        if not self.active:
            return
        x = output.detach().reshape(-1, output.shape[-1]).to(torch.float64)
        p = self.matrix.to(device=x.device, dtype=torch.float64)
        self.kept += float(((x @ p) * x).sum())  # x^T P x = ||P x||^2 for a symmetric idempotent P
        self.total += float((x * x).sum())


def _switch(meters: Iterable[_EnergyMeter], active: bool) -> None:
    for meter in meters:
        meter.active = active


def _share(kept: float, total: float) -> float | None:
    return kept / total if total > 0 else None


def _kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(reference || other) per position, from logits."""
    log_p = torch.log_softmax(reference.to(torch.float64), dim=-1)
    log_q = torch.log_softmax(other.to(torch.float64), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def subspace_diagnostics(model: nn.Module, tokenizer: Any, projectors: Projectors,
                         prompts: Sequence[str]) -> dict[str, Any]:
    """Kept K/V energy and KL(unprojected || projected) on ``prompts[:PROMPT_LIMIT]``, one prompt
    per forward pass (no padding to mask), with the projectors' gradient energy."""
    measured = list(prompts[:PROMPT_LIMIT])
    modules = kv_modules(model)
    meters = {(layer, kind): _EnergyMeter(matrix)
              for layer, by_kind in sorted(projectors.matrices.items()) for kind, matrix in sorted(by_kind.items())}
    handles = [modules[layer].proj(kind).register_forward_hook(meter) for (layer, kind), meter in meters.items()]
    kl_sum, n_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for prompt in measured:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
                plain = model(input_ids=ids).logits[0]
                _switch(meters.values(), False)
                with projected(model, projectors):
                    projected_logits = model(input_ids=ids).logits[0]
                _switch(meters.values(), True)
                kl_sum += float(_kl(plain, projected_logits).sum())
                n_tokens += ids.shape[1]
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    by_layer: dict[str, dict[str, float | None]] = {}
    for (layer, kind), meter in meters.items():
        by_layer.setdefault(str(layer), {})[kind] = _share(meter.kept, meter.total)
    overall = {kind: _share(sum(m.kept for (_, k), m in meters.items() if k == kind),
                            sum(m.total for (_, k), m in meters.items() if k == kind))
               for kind in sorted({kind for _, kind in meters})}
    energy = projectors.energy
    gradient = [share for by_kind in energy.values() for share in by_kind.values()]
    return {
        "prompt_limit": PROMPT_LIMIT,
        "n_prompts": len(measured),
        "n_tokens": n_tokens,
        "kept_energy": overall,
        "kept_energy_by_layer": by_layer,
        "kl_unprojected_to_projected": kl_sum / n_tokens if n_tokens else None,
        "gradient_energy": sum(gradient) / len(gradient) if gradient else None,  # none for random projectors
        "gradient_energy_by_layer": {str(layer): dict(by_kind) for layer, by_kind in sorted(energy.items())},
        "ranks": {str(layer): dict(by_kind) for layer, by_kind in sorted(projectors.ranks.items())},
        "dims": {str(layer): dict(by_kind) for layer, by_kind in sorted(projectors.dims.items())},
        "projector_source": projectors.source,
    }
