"""The method protocol: how a method turns (model, training prompts, calibration set) into a
training corpus and a fine-tuning setup. The engine, not the method, runs models, caches and
records; a new method is one small class.

Hooks, in the order the engine calls them (all optional):
  validate(config, source)            refuse a bad setting at plan time, before any model work
  validate_model(info)    -> notes    the same, for settings that depend on the model's shape
  prepare(ctx, out_dir)   -> info     e.g. SPD extracts projectors into out_dir (cached)
  sampling(ctx)           -> SamplingPlan   decoding settings and samples per prompt
  generation_handle(ctx)  -> Handle: which model the backend samples from (SPD: projected)
  curate(samples, ctx)    -> samples to train on (identity by default)
  train_spec(ctx)         -> TrainSpec (loss mask)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from spd_bench.backends.protocol import BASE, Handle


if TYPE_CHECKING:
    from spd_bench.config import RunConfig
    from spd_bench.models import LoadedModel
    from spd_bench.tasks import LoadedSource, SourceSpec

@dataclass
class TrainSpec:
    """What a method asks of fine-tuning on top of the shared TrainConfig."""

    loss_on: str = "all"  # all | completion


@dataclass
class Sample:
    prompt_id: str
    prompt: str
    completion: str
    sample_index: int = 0


@dataclass
class SamplingPlan:
    temperature: float
    top_p: float
    top_k: int = 0
    n_per_prompt: int = 1


@dataclass
class MethodContext:
    """What a method may look at; filled by the engine for one (model, source, seed) cell.

    The model loads on first access, so a fully cached run never loads it.
    """

    load_model: Callable[[], LoadedModel]
    source: SourceSpec
    data: LoadedSource  # train + calibration items
    config: RunConfig
    seed: int
    prepared: Path | None = None  # the folder prepare() filled, when the method has one
    progress: Callable[[str, int], Any] | None = None  # progress(description, total) -> context giving tick(n)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> LoadedModel:
        """The loaded base model (.model, .tokenizer, .device)."""
        return self.load_model()

    def item(self, prompt_id: str) -> dict[str, Any]:
        """The training item a sample came from (labels live here, for methods that use them)."""
        if "by_id" not in self.extras:
            self.extras["by_id"] = {item["id"]: item for item in self.data.train}
        return self.extras["by_id"][prompt_id]


@dataclass
class NoOptions:
    pass


class Method:
    """Base class with the defaults of raw self-distillation; subclasses override what differs."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    external_signal: ClassVar[str | None] = None  # None | "labels" | "tests" | "reward"
    trains: ClassVar[bool] = True
    has_prepare: ClassVar[bool] = False
    prepare_uses_seed: ClassVar[bool] = False
    version: ClassVar[int] = 1  # bump when the method's behaviour changes: invalidates its cache
    Options: ClassVar[type] = NoOptions
    paper_defaults: ClassVar[dict[str, Any]] = {}
    # Options that act only after sampling (curation, the loss mask, evaluation). They stay out
    # of the prepare and sample cache keys, so a sweep over them reuses the samples.
    post_sampling_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: Any | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def options_dict(self) -> dict[str, Any]:
        return asdict(self.options) if is_dataclass(self.options) else {}

    def sampling_options_dict(self) -> dict[str, Any]:
        """The options that can change what is prepared or sampled (the rest act later)."""
        return {k: v for k, v in self.options_dict().items() if k not in self.post_sampling_options}

    def validate(self, config: Any, source: Any) -> None:
        """Refuse a (config, training source) pair before any model work; raise UserError."""

    def validate_model(self, info: Any) -> list[str]:
        """Refuse options the model's shape rules out (info: spd_bench.model_info.ModelInfo, read
        from config files, no weights); return notes worth printing before the run starts."""
        return []

    def backend_problem(self, backend: str) -> str | None:
        """Why this method's options cannot run on the inference ``backend`` (None: they can)."""
        return None

    def prepare(self, ctx: MethodContext, out_dir: Path) -> dict[str, Any]:
        return {}

    def sampling(self, ctx: MethodContext) -> SamplingPlan:
        decoding = ctx.config.decoding
        return SamplingPlan(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k)

    def generation_handle(self, ctx: MethodContext) -> Handle:
        """The model the engine's backend samples training data from: the base model by default."""
        return BASE

    def curate(self, samples: list[Sample], ctx: MethodContext) -> list[Sample]:
        return samples

    def train_spec(self, ctx: MethodContext) -> TrainSpec:
        return TrainSpec(loss_on="all")

    def eval_temperature(self) -> float:
        """Decoding temperature when this method's models are evaluated (0 = greedy, recorded)."""
        return 0.0

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {f.name: getattr(cls.Options(), f.name) for f in fields(cls.Options)}


def make_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """Instantiate a registered method with validated options.

    Types are checked against the Options dataclass; ranges by its ``check(where)`` method, when
    it has one, so that every option fails at plan time with the field's full name.
    """
    from spd_bench.config import build_dataclass
    from spd_bench.errors import UserError
    from spd_bench.registry import METHODS

    cls = METHODS.get(name)
    try:
        opts = build_dataclass(cls.Options, options or {}, prefix=f"method_options.{name}.")
    except UserError:
        raise
    except TypeError as exc:
        raise UserError(f"method_options.{name}: {exc}") from exc
    check = getattr(opts, "check", None)
    if callable(check):
        check(f"method_options.{name}")
    return cls(opts)
