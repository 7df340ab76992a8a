"""Batched sampling with HF ``generate``: left padding, length-sorted batches, KV cache, seeded.

Batches are formed from prompts sorted by length so padding is small; each batch is seeded
from (seed, batch index), so the same inputs always give the same completions.
"""

from __future__ import annotations

from typing import Any, Callable


def truncate_at_stop(text: str, stop: list[str] | tuple[str, ...]) -> str:
    """Cut a completion at the first stop sequence (the stop text itself is dropped)."""
    cut = len(text)
    for sequence in stop:
        index = text.find(sequence)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 32,
    seed: int = 0,
    stop: list[str] | tuple[str, ...] = (),
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """One completion per prompt, in input order; temperature 0 means greedy."""
    import torch

    from spd_bench.spans import encode_prompt

    encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    completions: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = temperature > 0
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sampling, "pad_token_id": pad_id}
    if sampling:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop:
        kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
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
            completions[i] = truncate_at_stop(text, stop)
        if progress is not None:
            progress(len(batch))
    return completions
