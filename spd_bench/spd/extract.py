"""Phase 1 of SPD: the capability subspace of each target layer's keys and values.

One forward + backward per calibration example on the frozen model gives dL/dK and dL/dV
(k_proj / v_proj outputs: before RoPE, after the bias) at every position. Their Gram
matrices are accumulated in float64, so memory stays d x d however many tokens there are,
and the top-r eigenvectors of each Gram matrix span the subspace: P = V_r V_r^T.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from spd_bench.spd.kv_layout import KVModules, base_linear, kv_modules
from spd_bench.errors import UserError

if TYPE_CHECKING:
    from spd_bench.spans import EncodedExample

PROJECT_CHOICES = {"both": ("k", "v"), "k": ("k",), "v": ("v",)}
LOSS_CHOICES = ("aligned", "full")
_METADATA_KEY = "spd_bench_projectors"


@dataclass
class Projectors:
    """Per-layer orthogonal projectors onto the capability subspace, with how they were made.

    ``matrices[layer][kind]`` is a symmetric idempotent float64 (d x d) matrix, kind "k" or "v".
    ``energy`` is the share of gradient energy the kept directions capture (sum of the top-r
    eigenvalues over the trace); it is empty for random projectors, which see no gradients.
    """

    matrices: dict[int, dict[str, torch.Tensor]]
    ranks: dict[int, dict[str, int]]
    dims: dict[int, dict[str, int]]
    energy: dict[int, dict[str, float]] = field(default_factory=dict)
    source: str = "aligned"  # the loss that gave the gradients, or "random"
    n_examples: int = 0
    n_tokens: int = 0  # gradient rows: every position of every example
    n_target_tokens: int = 0  # positions whose labels entered the loss
    seed: int | None = None

    @property
    def layers(self) -> list[int]:
        return sorted(self.matrices)

    def metadata(self) -> dict:
        """Everything but the matrices, JSON-ready (recorded with each run)."""
        return {
            "layers": self.layers,
            "ranks": self.ranks,
            "dims": self.dims,
            "energy": self.energy,
            "source": self.source,
            "n_examples": self.n_examples,
            "n_tokens": self.n_tokens,
            "n_target_tokens": self.n_target_tokens,
            "seed": self.seed,
        }


class GramAccumulator:
    """Running G^T G in float64; keeps no gradient rows, so memory does not grow with tokens."""

    def __init__(self) -> None:
        self.gram: torch.Tensor | None = None
        self.rows = 0

    def add(self, rows: torch.Tensor) -> None:
        flat = rows.reshape(-1, rows.shape[-1]).to(torch.float64)
        update = flat.T @ flat
        self.gram = update if self.gram is None else self.gram.add_(update)
        self.rows += flat.shape[0]


def resolve_rank(d: int, rank: int | None, rank_fraction: float) -> int:
    """``rank`` if given, else round-half-up of ``rank_fraction * d``; must lie in 1..d."""
    if rank is None:
        if not 0 < rank_fraction <= 1:
            raise UserError(f"rank_fraction {rank_fraction} must be in (0, 1]; the paper uses 0.5")
        rank = math.floor(rank_fraction * d + 0.5)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= d:
        raise UserError(f"rank {rank!r} must be an integer from 1 to the key/value width d={d}")
    return rank


def _kinds(project: str) -> tuple[str, ...]:
    if project not in PROJECT_CHOICES:
        raise UserError(f"project {project!r} is not one of {', '.join(PROJECT_CHOICES)}")
    return PROJECT_CHOICES[project]


def _targets(model: nn.Module, layers: list[int], kinds: tuple[str, ...]) -> dict[tuple[int, str], nn.Module]:
    """(layer, kind) -> the module whose output is projected; validates the layer indices."""
    modules = kv_modules(model)
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(modules):
            raise UserError(f"layer {layer!r} is out of range: the model has layers 0..{len(modules) - 1}")
    chosen: dict[int, KVModules] = {m.layer: m for m in modules if m.layer in layers}
    return {(layer, kind): chosen[layer].proj(kind) for layer in sorted(set(layers)) for kind in kinds}


def target_positions(example: EncodedExample, loss: str) -> torch.Tensor:
    """Indices t whose label input_ids[t] enters the loss (it is predicted from position t-1).

    "aligned": tokens in the span (span_mask None means the whole answer, the `full` rule);
    "full": every answer token, t >= prompt_len. Position 0 has no prediction and never counts.
    """
    if loss not in LOSS_CHOICES:
        raise UserError(f"loss {loss!r} is not one of {', '.join(LOSS_CHOICES)}")
    length = len(example.input_ids)
    if not 1 <= example.prompt_len < length:
        raise UserError(
            f"calibration example has prompt_len {example.prompt_len} but {length} tokens; "
            "it needs a non-empty prompt and at least one answer token"
        )
    if loss == "full" or example.span_mask is None:
        mask = [t >= example.prompt_len for t in range(length)]
    else:
        if len(example.span_mask) != length:
            raise UserError(f"span_mask has {len(example.span_mask)} entries for {length} tokens; they must match")
        mask = list(example.span_mask)
    positions = [t for t in range(1, length) if mask[t]]
    if not positions:
        raise UserError("a calibration example marks no answer token as correctness-defining; fix its span rule")
    return torch.tensor(positions, dtype=torch.long)


def nll_at(logits: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean -log p(input_ids[t] | input_ids[<t]) over ``positions``; logits[t-1] predicts token t."""
    predicted_from = positions - 1
    return nn.functional.cross_entropy(logits[predicted_from].float(), input_ids[positions])


def example_gradients(
    model: nn.Module,
    targets: dict[tuple[int, str], nn.Module],
    example: EncodedExample,
    loss: str,
) -> tuple[dict[tuple[int, str], torch.Tensor], int]:
    """dL/d(output) of each target module at every position ([T, d]), and the number of targets.

    The caller freezes the parameters. A pre-hook makes each target module's input a leaf that
    requires grad when nothing upstream does, so backward stops at the lowest target layer; the
    forward hooks keep the outputs in the graph (never detached) and retain their gradients.
    """
    positions = target_positions(example, loss)
    captured: dict[tuple[int, str], torch.Tensor] = {}

    def make_leaf(_module: nn.Module, args: tuple) -> tuple | None:
        if args[0].requires_grad:
            return None
        return (args[0].detach().requires_grad_(True), *args[1:])

    def capture(key: tuple[int, str]) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            output.retain_grad()
            captured[key] = output

        return hook

    handles = []
    try:
        for key, module in targets.items():
            handles.append(module.register_forward_pre_hook(make_leaf))
            handles.append(module.register_forward_hook(capture(key)))
        device = next(model.parameters()).device
        ids = torch.tensor(example.input_ids, dtype=torch.long, device=device)
        with torch.enable_grad():
            logits = model(input_ids=ids[None], use_cache=False).logits[0]
            nll_at(logits, ids, positions.to(device)).backward()
    finally:
        for handle in handles:
            handle.remove()
    grads = {}
    for key, output in captured.items():
        if output.grad is None:
            raise RuntimeError(f"no gradient reached layer {key[0]} {key[1]}_proj")
        grads[key] = output.grad[0]
    return grads, len(positions)


def _projector(gram: torch.Tensor, rank: int, where: str) -> tuple[torch.Tensor, float]:
    """P onto the top-``rank`` eigenvectors of a Gram matrix, and the energy share they hold."""
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    eigenvalues = eigenvalues.clamp(min=0)
    total = float(eigenvalues.sum())
    if total == 0:
        raise UserError(f"the calibration set gives no gradient at {where}; check the examples' span masks")
    basis = eigenvectors[:, -rank:]
    return (basis @ basis.T).cpu(), float(eigenvalues[-rank:].sum()) / total


def _frozen_eval(model: nn.Module) -> Callable[[], None]:
    """Freeze parameters and switch to eval mode; returns the function that restores both."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    training = model.training
    for param, _ in flags:
        param.requires_grad_(False)
    model.eval()

    def restore() -> None:
        for param, flag in flags:
            param.requires_grad_(flag)
        model.train(training)

    return restore


def extract_projectors(
    model: nn.Module,
    examples: list[EncodedExample],
    *,
    layers: list[int],
    rank: int | None = None,
    rank_fraction: float = 0.5,
    project: str = "both",
    loss: str = "aligned",
    progress: Callable[[int, int], None] | None = None,
) -> Projectors:
    """Phase 1: projectors from the gradients of the calibration loss (see module docstring).

    ``progress(done, total)`` is called after each example.
    """
    kinds = _kinds(project)
    if loss not in LOSS_CHOICES:
        raise UserError(f"loss {loss!r} is not one of {', '.join(LOSS_CHOICES)}")
    if not examples:
        raise UserError("the calibration set is empty; SPD needs labelled examples to extract projectors")
    targets = _targets(model, layers, kinds)
    dims = {key: base_linear(module).out_features for key, module in targets.items()}
    ranks = {key: resolve_rank(d, rank, rank_fraction) for key, d in dims.items()}
    for example in examples:  # fail on a bad example before any model work
        target_positions(example, loss)

    grams = {key: GramAccumulator() for key in targets}
    n_tokens = n_target_tokens = 0
    restore = _frozen_eval(model)
    try:
        for done, example in enumerate(examples, start=1):
            grads, n_targets = example_gradients(model, targets, example, loss)
            for key, grad in grads.items():
                grams[key].add(grad)
            n_tokens += len(example.input_ids)
            n_target_tokens += n_targets
            if progress is not None:
                progress(done, len(examples))
    finally:
        restore()

    result = Projectors(
        {}, {}, {}, {}, source=loss, n_examples=len(examples), n_tokens=n_tokens, n_target_tokens=n_target_tokens
    )
    for (layer, kind), accumulator in grams.items():
        assert accumulator.gram is not None
        matrix, share = _projector(accumulator.gram, ranks[layer, kind], f"layer {layer} {kind}_proj")
        result.matrices.setdefault(layer, {})[kind] = matrix
        result.energy.setdefault(layer, {})[kind] = share
        result.ranks.setdefault(layer, {})[kind] = ranks[layer, kind]
        result.dims.setdefault(layer, {})[kind] = dims[layer, kind]
    return result


def random_projectors(
    model: nn.Module,
    layers: list[int],
    rank: int | None = None,
    project: str = "both",
    seed: int = 0,
    *,
    rank_fraction: float = 0.5,
) -> Projectors:
    """Control for SPD (spd_random): projectors onto random subspaces of the same rank.

    Each basis is the Q of a QR decomposition of a seeded Gaussian d x r matrix, drawn in
    (layer, kind) order from one generator, so a seed always gives the same projectors.
    """
    targets = _targets(model, layers, _kinds(project))
    generator = torch.Generator().manual_seed(seed)
    result = Projectors({}, {}, {}, source="random", seed=seed)
    for (layer, kind), module in targets.items():
        d = base_linear(module).out_features
        r = resolve_rank(d, rank, rank_fraction)
        basis, _ = torch.linalg.qr(torch.randn(d, r, generator=generator, dtype=torch.float64))
        result.matrices.setdefault(layer, {})[kind] = basis @ basis.T
        result.ranks.setdefault(layer, {})[kind] = r
        result.dims.setdefault(layer, {})[kind] = d
    return result


def save_projectors(proj: Projectors, path: str | Path) -> None:
    """Write the matrices as safetensors, with the metadata as JSON in the file header."""
    from safetensors.torch import save_file

    tensors = {
        f"layers.{layer}.{kind}": matrix.detach().cpu().contiguous()
        for layer, by_kind in proj.matrices.items()
        for kind, matrix in by_kind.items()
    }
    save_file(tensors, str(path), metadata={_METADATA_KEY: json.dumps(proj.metadata())})


def _int_keys(table: dict) -> dict:
    return {int(key): value for key, value in table.items()}


def load_projectors(path: str | Path) -> Projectors:
    """Read what ``save_projectors`` wrote."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    if not Path(path).is_file():
        raise UserError(f"projector file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = (handle.metadata() or {}).get(_METADATA_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except SafetensorError as exc:
        raise UserError(f"{path} is not a safetensors file ({exc})") from exc
    if header is None:
        raise UserError(f"{path} holds no SPD projectors (no {_METADATA_KEY} metadata); re-run extraction")
    meta = json.loads(header)
    matrices: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, layer, kind = name.split(".")
        matrices.setdefault(int(layer), {})[kind] = tensor
    return Projectors(
        matrices,
        _int_keys(meta["ranks"]),
        _int_keys(meta["dims"]),
        _int_keys(meta["energy"]),
        source=meta["source"],
        n_examples=meta["n_examples"],
        n_tokens=meta["n_tokens"],
        n_target_tokens=meta["n_target_tokens"],
        seed=meta["seed"],
    )
