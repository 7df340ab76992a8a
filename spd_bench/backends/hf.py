"""The Hugging Face backend: transformers ``generate``, PEFT adapters, lm-eval's ``HFLM``.

This is the only module of spd-bench that calls ``generate``, builds an ``HFLM`` or attaches a
LoRA adapter for inference. Sampling batches prompts sorted by length, pads on the left, uses
the KV cache and seeds every batch from (pass seed, batch index), so the same inputs always give
the same completions. Log-likelihoods use left-padded batches with explicit position ids, so
every continuation ends at the same column and only the last columns' logits are computed
(``logits_to_keep``), which keeps memory small for large vocabularies.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spd_bench.backends.protocol import (
    AdapterHandle,
    BaseHandle,
    GenerationPlan,
    Handle,
    Loglikelihood,
    Progress,
    ProjectedHandle,
    scored_sequence,
    truncate_at_stop,
)

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from spd_bench.models import LoadedModel


class HFBackend:
    """One in-memory transformers model (and its tokenizer) served under every handle."""

    name: ClassVar[str] = "hf"

    def __init__(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, device: str | None = None, dtype: str | None = None
    ) -> None:
        self.model = model
        self._tokenizer = tokenizer
        parameter = next(model.parameters())
        self.device = device or str(parameter.device)
        self.dtype = dtype or str(parameter.dtype).removeprefix("torch.")
        self.loaded: LoadedModel | None = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> HFBackend:
        """Serve a model ``spd_bench.models.load_model`` loaded (kept as ``.loaded`` for training)."""
        backend = cls(loaded.model, loaded.tokenizer, loaded.device, loaded.dtype)
        backend.loaded = loaded
        return backend

    @classmethod
    def load(cls, spec: str, cache_dir: Path, device: str, dtype: str, **options: Any) -> HFBackend:
        """``options`` are other backends' settings: the hf backend takes none."""
        if options:
            from spd_bench.errors import UserError

            raise UserError(f"the hf backend takes no options; got {', '.join(sorted(options))}")
        from spd_bench.models import load_model

        return cls.from_loaded(load_model(spec, cache_dir, device, dtype))

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @contextlib.contextmanager
    def model_for(self, handle: Handle) -> Iterator[nn.Module]:
        """The module that computes ``handle``'s outputs; adapters and hooks go away after."""
        if isinstance(handle, BaseHandle):
            yield self.model
        elif isinstance(handle, AdapterHandle):
            from peft import PeftModel

            peft_model = PeftModel.from_pretrained(self.model, handle.adapter)
            peft_model.eval()
            try:
                yield peft_model
            finally:
                peft_model.unload()
        elif isinstance(handle, ProjectedHandle):
            from spd_bench.spd.extract import load_projectors
            from spd_bench.spd.projection import folded_copy, projected

            projectors = load_projectors(handle.projectors)
            if handle.mode == "fold":
                yield folded_copy(self.model, projectors)
            else:
                with projected(self.model, projectors) as hooked:
                    yield hooked
        else:
            raise TypeError(f"the hf backend cannot serve {handle!r}")

    def generate(
        self, handle: Handle, prompts: Sequence[str], plan: GenerationPlan, progress: Progress | None = None
    ) -> list[list[str]]:
        with self.model_for(handle) as model:
            passes = [
                _generate_pass(model, self.tokenizer, list(prompts), plan, plan.seed + k, progress) for k in range(plan.n)
            ]
        return [[texts[i] for texts in passes] for i in range(len(prompts))]

    def loglikelihood(
        self, handle: Handle, requests: Sequence[tuple[str, str]], batch_size: int = 32
    ) -> list[Loglikelihood]:
        with self.model_for(handle) as model:
            return _loglikelihoods(model, self.tokenizer, requests, batch_size)

    def max_length(self, handle: Handle) -> int:
        """Adapters and projections keep the base model's config, so no handle needs attaching."""
        return _max_length(self.model)

    @contextlib.contextmanager
    def lm_eval_model(self, handle: Handle, batch_size: int) -> Iterator[LM]:
        """lm-eval's own HF model on the in-memory model (adapter attached, projection applied)."""
        with self.model_for(handle) as model:
            yield _make_hflm_class()(
                pretrained=model, tokenizer=self.tokenizer, batch_size=batch_size, max_length=_max_length(model)
            )

    def close(self) -> None:
        """Nothing to release: the model is the caller's (training uses the same object)."""


def _generate_pass(
    model: Any, tokenizer: Any, prompts: list[str], plan: GenerationPlan, seed: int, progress: Progress | None
) -> list[str]:
    """One completion per prompt, in input order; temperature 0 means greedy."""
    import torch

    from spd_bench.spans import encode_prompt

    encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    completions: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = plan.temperature > 0
    kwargs: dict[str, Any] = {"max_new_tokens": plan.max_new_tokens, "do_sample": sampling, "pad_token_id": pad_id}
    if sampling:
        kwargs.update(temperature=plan.temperature, top_p=plan.top_p, top_k=plan.top_k if plan.top_k > 0 else None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if plan.stop:
        kwargs.update(stop_strings=list(plan.stop), tokenizer=tokenizer)
    batch_size = max(1, plan.batch_size)
    for batch_index, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = encoded[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        torch.manual_seed(seed * 1_000_003 + batch_index)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=True, **kwargs
            )
        for row, i in enumerate(batch):
            text = tokenizer.decode(output[row, width:], skip_special_tokens=True)
            completions[i] = truncate_at_stop(text, plan.stop)
        if progress is not None:
            progress(len(batch))
    return completions


def _loglikelihoods(
    model: Any, tokenizer: Any, requests: Sequence[tuple[str, str]], batch_size: int
) -> list[Loglikelihood]:
    """Batched log p(continuation | context); prompt and continuation tokenized as in training."""
    import torch

    limit = _max_length(model)
    sequences = [scored_sequence(tokenizer, context, continuation, limit) for context, continuation in requests]
    results = [Loglikelihood(0.0, 0, True, False)] * len(sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device = next(model.parameters()).device
    keep_logits = _accepts_logits_to_keep(model)
    order = sorted((i for i in range(len(sequences)) if sequences[i][1] >= 1), key=lambda i: len(sequences[i][0]))
    step = max(1, batch_size)
    model.eval()
    for start in range(0, len(order), step):
        batch = order[start : start + step]
        width = max(len(sequences[i][0]) for i in batch)
        keep = max(sequences[i][1] for i in batch) + 1
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids = sequences[index][0]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": keep} if keep_logits else {}
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), **extra).logits[:, -keep:]
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = input_ids[:, width - keep + 1:].to(device)
        token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        greedy = logprobs.argmax(-1) == targets
        for row, index in enumerate(batch):
            _, n_scored, truncated = sequences[index]
            results[index] = Loglikelihood(
                logprob=float(token_logprobs[row, -n_scored:].sum()), n_tokens=n_scored,
                is_greedy=bool(greedy[row, -n_scored:].all()), truncated=truncated,
            )
    return results


def _max_length(model: Any) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", 2048) or 2048)


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@functools.cache
def _make_hflm_class() -> type:
    from lm_eval.models.huggingface import HFLM

    class _HFLM(HFLM):
        """lm-eval's HF model, with progress bars that obey TQDM_DISABLE.

        lm-eval passes ``disable=`` to its bars explicitly, which tqdm lets win over the
        environment; the CLI sets TQDM_DISABLE for --quiet and for output that is not a terminal.
        """

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or bars_disabled())

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or bars_disabled())

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            return super().generate_until(requests, disable_tqdm=disable_tqdm or bars_disabled())

    return _HFLM


def bars_disabled() -> bool:
    """Whether the CLI asked for no progress bars (``--quiet``, or output not a terminal)."""
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
