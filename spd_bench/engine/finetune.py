"""LoRA fine-tuning with peft on (prompt, completion) pairs; adapters saved in peft's format.

The model is wrapped in place and unwrapped afterwards (``unload``), so one loaded base model
serves every cell without copies.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spd_bench.config import TrainConfig
from spd_bench.method import TrainSpec

if TYPE_CHECKING:
    from torch import Tensor


def _batches(encoded: list[tuple[list[int], int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(len(encoded)))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(examples: list[tuple[list[int], int]], pad_id: int, loss_on: str) -> tuple[Tensor, Tensor, Tensor]:
    """(input ids, attention mask, labels) for a batch of (tokens, prompt length), right-padded to the longest.

    Labels are -100 (no loss) on padding and, with ``loss_on="completion"``, on the prompt; with
    ``"all"`` only the first token goes without, since no token predicts it.
    """
    import torch

    width = max(len(tokens) for tokens, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, prompt_len) in enumerate(examples):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        first = prompt_len if loss_on == "completion" else 1
        labels[row, first : len(tokens)] = torch.tensor(tokens[first:])
    return ids, mask, labels


def train_lora(
    model: Any,
    tokenizer: Any,
    pairs: list[tuple[str, str]],
    train: TrainConfig,
    spec: TrainSpec,
    seed: int,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune LoRA adapters on ``pairs`` and save them to ``out_dir``; returns a budget summary."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup, get_constant_schedule_with_warmup

    from spd_bench.errors import UserError
    from spd_bench.spans import encode_example

    if spec.loss_on not in ("all", "completion"):
        raise UserError(f"loss_on {spec.loss_on!r} is not one of all, completion")
    if not pairs:
        raise UserError("the curated training corpus is empty: nothing to fine-tune on; check the method's filter")
    encoded = []
    for prompt, completion in pairs:
        example = encode_example(tokenizer, prompt, completion, rule=None, max_length=train.max_length)
        encoded.append((example.input_ids, example.prompt_len))
    torch.manual_seed(seed)
    rng = random.Random(seed)
    lora = LoraConfig(
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules=list(train.target_modules),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    steps_per_epoch = math.ceil(len(encoded) / train.batch_size)
    total = steps_per_epoch * train.epochs
    warmup = int(train.warmup_ratio * total)
    if train.schedule == "cosine":
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    elif train.schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
    else:
        raise UserError(f"train.schedule {train.schedule!r} is not one of cosine, constant")
    device = next(peft_model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    step = 0
    n_loss_tokens = 0
    for _epoch in range(train.epochs):
        for batch in _batches(encoded, train.batch_size, rng):
            ids, mask, labels = collate([encoded[i] for i in batch], pad_id, spec.loss_on)
            n_loss_tokens += int((labels != -100).sum())
            output = peft_model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            if not torch.isfinite(output.loss):
                peft_model.unload()
                raise UserError(
                    f"fine-tuning loss is {float(output.loss)} at step {step + 1} of {total}: training diverged;"
                    " lower train.lr (no adapter or record was written)"
                )
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(output.loss.detach()))
            step += 1
            if progress is not None:
                progress(step, total)
    peft_model.eval()
    peft_model.save_pretrained(out_dir)
    peft_model.unload()
    return {
        "n_examples": len(pairs),
        "n_tokens": sum(len(tokens) for tokens, _ in encoded),
        "n_loss_tokens_per_epoch": n_loss_tokens // max(train.epochs, 1),
        "epochs": train.epochs,
        "steps": step,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses[:: max(1, len(losses) // 50)],
    }
