"""The model-backend protocol: the one seam between spd-bench and an inference engine.

Every stage that needs a model's outputs (sampling training data, EvalPlus code generation,
lm-eval scoring, reference NLL, the organism's accuracy check) asks a ``Backend`` for them,
naming the model by a small frozen handle. A new engine is one module implementing ``Backend``
plus one entry in ``spd_bench.backends.BACKENDS``; nothing else changes.

Fine-tuning and SPD's subspace extraction need gradients, so they work on the Hugging Face model
object whatever the backend (the hf backend's own ``loaded`` model, or one loaded beside another
engine for those stages only); inference engines do not serve them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class BaseHandle:
    """The base model as loaded."""


@dataclass(frozen=True)
class AdapterHandle:
    """The base model with the LoRA adapter saved in ``adapter`` (a PEFT folder) attached."""

    adapter: Path


@dataclass(frozen=True)
class ProjectedHandle:
    """The base model with SPD's K/V projectors (a ``save_projectors`` file) applied.

    ``mode`` is ``fold`` (weights edited in a copy: any engine can serve it) or ``hooks``
    (forward hooks on k_proj / v_proj); both give the same outputs up to rounding.
    """

    projectors: Path
    mode: Literal["fold", "hooks"] = "fold"


Handle = Union[BaseHandle, AdapterHandle, ProjectedHandle]
BASE = BaseHandle()


def handle_for_adapter(adapter: Path | None) -> Handle:
    """The handle of a fine-tuned model; ``None`` (nothing was trained) is the base model."""
    return BASE if adapter is None else AdapterHandle(Path(adapter))


@dataclass(frozen=True)
class GenerationPlan:
    """How to decode: ``n`` completions per prompt; temperature 0 means greedy.

    Completion k of every prompt comes from one pass over all prompts seeded with ``seed + k``;
    within a pass, prompts are batched by length and batch b is seeded ``pass_seed * 1_000_003
    + b``, so the same inputs always give the same completions. Each completion is cut before
    the first stop sequence. ``top_k`` 0 means no top-k cut.
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()
    batch_size: int = 32


@dataclass(frozen=True)
class Loglikelihood:
    """log p(continuation | context) summed over the continuation's scored tokens.

    ``n_tokens`` is how many tokens were scored (0 for an empty continuation, whose logprob is
    0); ``is_greedy`` says whether greedy decoding would produce every one of them;
    ``truncated`` that the context's start was cut to fit the model's length.
    """

    logprob: float
    n_tokens: int
    is_greedy: bool
    truncated: bool = False


Progress = Callable[[int], None]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut a completion at the first stop sequence (the stop text itself is dropped)."""
    cut = len(text)
    for sequence in stop:
        index = text.find(sequence)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def scored_sequence(tokenizer: Any, context: str, continuation: str, limit: int) -> tuple[list[int], int, bool]:
    """(token ids, continuation tokens scored, truncated) of one log-likelihood request, the same for
    every backend: tokenized as in training without EOS, the first token unscored (nothing predicts
    it), and the context's start cut when the sequence exceeds ``limit`` (the continuation kept)."""
    from spd_bench.spans import encode_example

    encoded = encode_example(tokenizer, context, continuation, add_eos=False)
    ids = encoded.input_ids
    n_scored = len(ids) - max(encoded.prompt_len, 1)
    truncated = n_scored >= 1 and len(ids) > limit
    if truncated:
        ids = ids[-limit:]
        n_scored = min(n_scored, limit - 1)
    return ids, max(n_scored, 0), truncated


@runtime_checkable
class Backend(Protocol):
    """What every model-backed stage asks of an inference engine (one base model per backend)."""

    name: ClassVar[str]
    device: str
    dtype: str

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The model's tokenizer: prompt rendering, span encoding and training use it."""
        ...

    def generate(
        self, handle: Handle, prompts: Sequence[str], plan: GenerationPlan, progress: Progress | None = None
    ) -> list[list[str]]:
        """``plan.n`` completions per prompt, in input order; ``progress(k)`` after k more."""
        ...

    def loglikelihood(
        self, handle: Handle, requests: Sequence[tuple[str, str]], batch_size: int = 32
    ) -> list[Loglikelihood]:
        """One result per (context, continuation) pair, tokenized as in training (no EOS)."""
        ...

    def max_length(self, handle: Handle) -> int:
        """The longest sequence, in tokens, the model takes."""
        ...

    def lm_eval_model(self, handle: Handle, batch_size: int) -> AbstractContextManager[LM]:
        """The lm-eval ``LM`` that scores ``handle`` (valid inside the block)."""
        ...

    def close(self) -> None:
        """Release engines and the memory they hold (e.g. before training on the same GPU). The
        backend stays usable: a later request starts again whatever it needs."""
        ...


class BackendFactory(Protocol):
    """A registry entry: loads a model spec (hub id, folder or built-in name) into a backend;
    ``options`` are the backend's own settings (e.g. the vllm backend's), keyword arguments."""

    def load(self, spec: str, cache_dir: Path, device: str, dtype: str, **options: Any) -> Backend: ...
