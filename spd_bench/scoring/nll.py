"""Reference NLL: how likely the model finds each item's reference answer (lower is better).

The paper scores its out-of-domain code set (CodeAlpaca) this way, since free-form
instructions have no tests to run. Prompt and answer are tokenized exactly as in training
(``spans.encode_example``, no EOS), and each item's score is the mean negative log-likelihood
per answer token, in nats; the task's ``nll`` is the mean over items, so every item weighs the
same whatever its length.

Batches are left-padded with explicit position ids, so every answer ends at the same column and
only the last columns' logits are computed (``logits_to_keep``), which keeps memory small
for large vocabularies.
"""

from __future__ import annotations

import inspect
from typing import Any

from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings


def _max_length(model: Any) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "max_position_embeddings", 2048) or 2048)


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class ReferenceNLL:
    """Mean per-token NLL of ``item["answer"]`` given ``item["prompt"]``; metric ``nll``."""

    def score_model(
        self, model: Any, tokenizer: Any, task: Any, items: list[dict[str, Any]], settings: ScoreSettings
    ) -> ScoreOutput:
        import torch

        from spd_bench.spans import encode_example

        limit = _max_length(model)
        sequences: list[tuple[list[int], int]] = []  # (token ids, number of answer tokens scored)
        truncated = 0
        for item in items:
            encoded = encode_example(tokenizer, item["prompt"], item["answer"], add_eos=False)
            n_answer = len(encoded.input_ids) - max(encoded.prompt_len, 1)  # the first token has no context
            if n_answer < 1:
                raise UserError(f"item {item['id']}: the reference answer is empty; NLL scoring needs an answer")
            ids = encoded.input_ids
            if len(ids) > limit:  # keep the answer, cut the prompt's start
                truncated += 1
                ids = ids[-limit:]
                n_answer = min(n_answer, limit - 1)
            sequences.append((ids, n_answer))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        device = next(model.parameters()).device
        keep_logits = _accepts_logits_to_keep(model)
        scores: list[float] = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(sequences[i][0]))
        model.eval()
        for start in range(0, len(order), max(1, settings.batch_size)):
            batch = order[start : start + settings.batch_size]
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
            for row, index in enumerate(batch):
                n_answer = sequences[index][1]
                scores[index] = -float(token_logprobs[row, -n_answer:].sum()) / n_answer
        per_item = [
            {"doc_id": i, "id": item["id"], "score": scores[i], "n_tokens": sequences[i][1]}
            for i, item in enumerate(items)
        ]
        return ScoreOutput(
            metrics={"nll": sum(scores) / len(scores)} if scores else {},
            primary_metric="nll",
            higher_is_better=False,
            per_item=per_item,
            native={"unit": "nats per answer token, mean over items", "add_eos": False,
                    "n_truncated": truncated, "max_length": limit},
        )

    def score_responses(
        self, task: Any, items: list[dict[str, Any]], responses: dict[str, list[str]], settings: ScoreSettings
    ) -> ScoreOutput:
        raise UserError(
            f"task {task.name} is scored by the model's likelihood of reference answers, which stored responses"
            " cannot give; score it with `spd-bench run`"
        )
