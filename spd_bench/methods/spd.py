"""``spd``: Self-Policy Distillation (arXiv 2605.22675), and its control ``spd_random``.

Phase 1 (prepare): gradients of the loss on correctness-defining tokens of 50 labelled
calibration examples give a K/V subspace per target layer. Phase 2 (generation_handle): the
model samples its training data with K and V projected onto that subspace (folded into the
k_proj/v_proj weights by default, or with hooks; the backend applies them). Phase 3: LoRA on the original, unprojected
model over prompt + completion. Defaults are the paper's (docs/spd-method.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.backends.protocol import ProjectedHandle
from spd_bench.method import TrainSpec
from spd_bench.errors import UserError
from spd_bench.method import Method, MethodContext

PROJECTORS_FILE = "projectors.safetensors"


@dataclass
class SPDOptions:
    rank_fraction: float = 0.5
    rank: int | None = None  # overrides rank_fraction when set
    layers: str | list[int] = "last_mid"  # see kv_layout.LAYER_CHOICES, or an explicit 0-based list
    project: str = "both"  # both | k | v
    calibration_loss: str = "aligned"  # aligned (span tokens only) | full (every answer token)
    n_calibration: int = 50
    generation: str = "fold"  # fold (weights edited, any engine) | hooks (forward hooks)
    loss_on: str = "all"  # all (prompt + completion, the paper) | completion

    def check(self, where: str) -> None:
        """Refuse out-of-range values at plan time (``where`` is e.g. method_options.spd)."""
        from spd_bench.spd.extract import LOSS_CHOICES, PROJECT_CHOICES
        from spd_bench.spd.kv_layout import LAYER_CHOICES

        if not 0 < self.rank_fraction <= 1:
            raise UserError(f"{where}.rank_fraction = {self.rank_fraction!r} is out of range: allowed (0, 1]; the paper uses 0.5")
        if self.rank is not None and self.rank < 1:
            raise UserError(f"{where}.rank = {self.rank!r} is out of range: allowed an integer >= 1 (or leave it out)")
        if self.n_calibration < 1:
            raise UserError(f"{where}.n_calibration = {self.n_calibration!r} is out of range: allowed an integer >= 1")
        layers = _layers_spec(self.layers)
        if isinstance(layers, str) and layers not in LAYER_CHOICES:
            raise UserError(f"{where}.layers = {layers!r} is not one of {', '.join(LAYER_CHOICES)} or a list of 0-based indices")
        if isinstance(layers, list) and (not layers or any(index < 0 for index in layers)):
            raise UserError(f"{where}.layers = {layers!r}: give at least one 0-based layer index (0 or more)")
        for name, value, choices in (("project", self.project, tuple(PROJECT_CHOICES)),
                                     ("calibration_loss", self.calibration_loss, LOSS_CHOICES),
                                     ("generation", self.generation, ("fold", "hooks")),
                                     ("loss_on", self.loss_on, ("all", "completion"))):
            if value not in choices:
                raise UserError(f"{where}.{name} = {value!r} is not one of {', '.join(choices)}")


PAPER_DEFAULTS = {
    "rank_fraction": 0.5, "layers": "last_mid", "project": "both", "calibration_loss": "aligned",
    "n_calibration": 50, "loss_on": "all",
}


def _layers_spec(value: str | list[int]) -> str | list[int]:
    if isinstance(value, str) and value.replace(",", "").replace(" ", "").isdigit():
        return [int(v) for v in value.split(",")]
    return value


class SPD(Method):
    name = "spd"
    description = "Self-Policy Distillation: sample with K/V projected onto a gradient capability subspace, LoRA on raw outputs."
    has_prepare = True
    Options = SPDOptions
    paper_defaults = PAPER_DEFAULTS
    post_sampling_options = frozenset({"loss_on"})

    def backend_problem(self, backend: str) -> str | None:
        if backend != "hf" and self.options.generation == "hooks":
            return (f"method_options.{self.name}.generation = hooks needs forward hooks, which only the hf backend"
                    " has; use generation: fold (the same outputs up to rounding) or --backend hf")
        return None

    def validate_model(self, info: Any) -> list[str]:
        """Check the options against the model's shape (from its config, no weights); return notes."""
        from spd_bench.spd.extract import resolve_rank
        from spd_bench.spd.kv_layout import resolve_layers

        if info.kv_error:
            raise UserError(f"{self.name} cannot run on {info.name}: {info.kv_error}")
        where = f"method_options.{self.name}"
        try:
            layers = resolve_layers(_layers_spec(self.options.layers), info.n_layers)
        except UserError as exc:
            raise UserError(f"{where}.layers: {exc}") from None
        for width in set(info.kv_widths):
            try:
                resolve_rank(width, self.options.rank, self.options.rank_fraction)
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
        notes = []
        if self.options.layers in ("last_mid", "last_mid_1based") and len(layers) == 1:
            notes.append(f"{self.name}: layers {self.options.layers} on a {info.n_layers}-layer model is the single"
                         f" layer {layers[0]} (the middle and the last layer coincide)")
        return notes

    def calibration_examples(self, ctx: MethodContext) -> list[Any]:
        from spd_bench.spans import encode_example

        items = ctx.data.calibration
        wanted = self.options.n_calibration
        if len(items) < wanted:
            raise UserError(
                f"the calibration set of {ctx.source.name} has {len(items)} examples but n_calibration is {wanted};"
                f" lower method_options.{self.name}.n_calibration or provide more labelled examples"
            )
        tokenizer = ctx.model.tokenizer
        max_length = ctx.config.train.max_length
        return [
            encode_example(tokenizer, item["prompt"], item["answer"], rule=ctx.source.span_rule, max_length=max_length)
            for item in items[:wanted]
        ]

    def build_projectors(self, ctx: MethodContext, layers: list[int]) -> Any:
        from spd_bench.spd.extract import extract_projectors

        opts = self.options
        examples = self.calibration_examples(ctx)
        progress = ctx.progress or (lambda description, total: contextlib.nullcontext(lambda n: None))
        with progress(f"{self.name}/{ctx.source.name}: extract subspace", len(examples)) as tick:
            return extract_projectors(
                ctx.model.model, examples, layers=layers, rank=opts.rank, rank_fraction=opts.rank_fraction,
                project=opts.project, loss=opts.calibration_loss, progress=lambda done, total: tick(1),
            )

    def prepare(self, ctx: MethodContext, out_dir: Path) -> dict[str, Any]:
        from spd_bench.spd.extract import save_projectors
        from spd_bench.spd.kv_layout import kv_modules, resolve_layers

        model = ctx.model.model
        layers = resolve_layers(_layers_spec(self.options.layers), len(kv_modules(model)))
        projectors = self.build_projectors(ctx, layers)
        save_projectors(projectors, out_dir / PROJECTORS_FILE)
        return {"projectors": projectors.metadata(), "calibration_ids": [i["id"] for i in ctx.data.calibration[: self.options.n_calibration]]}

    def generation_handle(self, ctx: MethodContext) -> ProjectedHandle:
        """The base model with the prepared projectors, folded or hooked as the options say."""
        assert ctx.prepared is not None
        mode = "hooks" if self.options.generation == "hooks" else "fold"  # validated by SPDOptions.check
        return ProjectedHandle(ctx.prepared / PROJECTORS_FILE, mode=mode)

    def train_spec(self, ctx: MethodContext) -> TrainSpec:
        return TrainSpec(loss_on=self.options.loss_on)


class SPDRandom(SPD):
    name = "spd_random"
    description = "Control for SPD: the same projection onto a random orthonormal subspace of the same rank."
    prepare_uses_seed = True

    def build_projectors(self, ctx: MethodContext, layers: list[int]) -> Any:
        from spd_bench.spd.extract import random_projectors

        opts = self.options
        return random_projectors(
            ctx.model.model, layers, rank=opts.rank, project=opts.project, seed=ctx.seed, rank_fraction=opts.rank_fraction
        )
