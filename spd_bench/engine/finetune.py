"""LoRA fine-tuning on (prompt, completion) pairs through TRL's ``SFTTrainer``; adapters saved in peft's format.

The examples reach the trainer pre-tokenized (``spans.encode_example``) with their ``labels``
already masked (``loss_labels``), so the tokens that carry loss are exactly the ones ``collate``
marks. The model is wrapped in place and unwrapped afterwards (``unload``), and whatever the
trainer changed on it (forward patch, config fields, training mode, gradient checkpointing, hooks,
``requires_grad``) is put back, so one loaded base model serves every cell without copies.
docs/training.md describes the options.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spd_bench.config import TrainConfig
from spd_bench.errors import UserError
from spd_bench.method import TrainSpec

if TYPE_CHECKING:
    from torch import Tensor

IGNORE = -100  # the label of a token that carries no loss
LOSS_ON = ("all", "completion")
CURVE_POINTS = 50  # the returned curves keep about this many points


def loss_labels(tokens: list[int], prompt_len: int, loss_on: str) -> list[int]:
    """The labels of one example: ``IGNORE`` where no loss is taken, the token itself elsewhere.

    ``loss_on="completion"``: the completion's tokens only; ``"all"``: every token but the first,
    since no token predicts it.
    """
    first = min(prompt_len if loss_on == "completion" else 1, len(tokens))
    return [IGNORE] * first + list(tokens[first:])


def collate(examples: list[tuple[list[int], int]], pad_id: int, loss_on: str) -> tuple[Tensor, Tensor, Tensor]:
    """(input ids, attention mask, labels) for a batch of (tokens, prompt length), right-padded to the longest.

    Labels are -100 (no loss) on padding and as ``loss_labels`` says; the trainer's collator builds
    the same batch from the same labels (tests/test_finetune.py checks it).
    """
    import torch

    width = max(len(tokens) for tokens, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, prompt_len) in enumerate(examples):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        labels[row, : len(tokens)] = torch.tensor(loss_labels(tokens, prompt_len, loss_on))
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
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune LoRA adapters on ``pairs`` and save them to ``out_dir``; returns a budget summary.

    With ``train.save_steps > 0`` and a ``checkpoint_dir``, the trainer saves a checkpoint there
    every ``save_steps`` optimizer steps and a later call resumes from the latest complete one
    (the caller deletes the folder once the adapter is stored). Nothing but the adapter is
    written to ``out_dir``; under ``accelerate launch`` only the main process writes it.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, set_seed

    from spd_bench.spans import encode_example

    if spec.loss_on not in LOSS_ON:
        raise UserError(f"loss_on {spec.loss_on!r} is not one of {', '.join(LOSS_ON)}")
    if not pairs:
        raise UserError("the curated training corpus is empty: nothing to fine-tune on; check the method's filter")
    rows = []
    for prompt, completion in pairs:
        example = encode_example(tokenizer, prompt, completion, rule=None, max_length=train.max_length)
        rows.append({"input_ids": example.input_ids,
                     "labels": loss_labels(example.input_ids, example.prompt_len, spec.loss_on)})
    n_loss_tokens = sum(label != IGNORE for row in rows for label in row["labels"])
    if n_loss_tokens == 0:
        raise UserError(f"no training example keeps a token to learn from within train.max_length = {train.max_length}"
                        f" (loss on {spec.loss_on}); raise train.max_length")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = train.per_device(processes)
    device = next(model.parameters()).device
    if device.type == "cuda" and device.index not in (None, 0) and processes == 1:
        raise UserError(f"fine-tuning runs on the first visible GPU, and the model is on {device}; run with"
                        f" CUDA_VISIBLE_DEVICES={device.index} and --device cuda instead")
    bf16, fp16 = _precision(train.precision, device)
    if fp16 and device.type != "cuda":
        raise UserError(f"train.precision = fp16 needs a CUDA GPU, and the model is on {device}; use bf16 or fp32")
    resumable = train.save_steps > 0 and checkpoint_dir is not None
    resume_from = _latest_checkpoint(checkpoint_dir) if resumable else None

    restore = _snapshot(model, tokenizer)
    scratch = None if resumable else tempfile.TemporaryDirectory(prefix="spd-bench-sft-")
    peft_model = None
    try:
        set_seed(seed)  # the LoRA weights' initialisation, as TRL seeds it when it wraps the model itself
        peft_model = get_peft_model(model, LoraConfig(
            r=train.lora_r,
            lora_alpha=train.lora_alpha,
            lora_dropout=train.lora_dropout,
            target_modules=list(train.target_modules),
            task_type="CAUSAL_LM",
        ))
        args = _sft_config(train, seed, per_device, bf16, fp16, device,
                           output_dir=Path(checkpoint_dir) if resumable else Path(scratch.name),  # type: ignore[union-attr]
                           resumable=resumable, run_name=Path(checkpoint_dir).name if checkpoint_dir else None)
        with _quiet_datasets():
            from datasets import Dataset

            trainer = _trainer_class()(
                model=peft_model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                callbacks=[_hooks_class()(progress)],
            )
            trainer.warmup_ratio = train.warmup_ratio
            trainer.remove_callback(PrinterCallback)  # disable_tqdm adds it: it would print every log line
            try:
                trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            except _Diverged as exc:
                raise UserError(
                    f"fine-tuning loss is {exc.loss} at step {exc.step} of {exc.total}: training diverged;"
                    " lower train.lr (no adapter or record was written)"
                ) from None
        history = list(trainer.state.log_history)
        steps = trainer.state.global_step
        peft_model.eval()
        if trainer.accelerator.is_main_process:
            peft_model.save_pretrained(out_dir)
        trainer.accelerator.wait_for_everyone()
        del trainer
    finally:
        if peft_model is not None:
            peft_model.unload()
        restore()
        if scratch is not None:
            scratch.cleanup()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    points = [entry for entry in history if "loss" in entry]
    losses = [float(entry["loss"]) for entry in points]
    stride = max(1, len(points) // CURVE_POINTS)
    return {
        "n_examples": len(pairs),
        "n_tokens": sum(len(row["input_ids"]) for row in rows),
        "n_loss_tokens_per_epoch": n_loss_tokens,
        "epochs": train.epochs,
        "steps": steps,
        "resumed_from_step": _step_of(resume_from) if resume_from else 0,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses[::stride],
        "train_curve": [{key: entry[key] for key in _CURVE_KEYS if key in entry} for entry in points[::stride]],
    }


_CURVE_KEYS = ("step", "epoch", "loss", "grad_norm", "learning_rate", "mean_token_accuracy", "entropy", "num_tokens")


def _precision(precision: str, device: Any) -> tuple[bool, bool]:
    """(bf16, fp16) autocast for ``train.precision``: auto is bf16 on a GPU that has it, fp32 elsewhere."""
    import torch

    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported(), False
    return precision == "bf16", precision == "fp16"


def _sft_config(train: TrainConfig, seed: int, per_device: int, bf16: bool, fp16: bool, device: Any,
                output_dir: Path, resumable: bool, run_name: str | None) -> Any:
    """The trainer's settings: the hand loop's optimizer (AdamW, clipping at 1.0) and schedule, seeded."""
    from transformers.training_args import ParallelMode
    from trl import SFTConfig

    args = SFTConfig(
        output_dir=str(output_dir),
        run_name=run_name,
        seed=seed,
        data_seed=seed,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        optim="adamw_torch",
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine" if train.schedule == "cosine" else "constant_with_warmup",
        warmup_steps=0,  # set from train.warmup_ratio once the step count is known (_trainer_class)
        bf16=bf16,
        fp16=fp16,
        use_cpu=device.type == "cpu",
        gradient_checkpointing=train.gradient_checkpointing,
        max_length=train.max_length,
        packing=train.packing,
        shuffle_dataset=False,  # the sampler shuffles every epoch, seeded by data_seed
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,  # a non-finite loss must reach the divergence check, not be averaged away
        save_strategy="steps" if resumable else "no",
        save_steps=train.save_steps if resumable else 500,
        save_total_limit=1 if resumable else None,
        eval_strategy="no",
        report_to=list(train.report_to) or "none",
        disable_tqdm=True,
        push_to_hub=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every forward pass
    )
    # One process sees one device, the model's: with several GPUs visible and no launcher, Trainer would
    # wrap the model in nn.DataParallel, which SFTTrainer refuses (it sets this itself for model parallelism).
    if args.parallel_mode != ParallelMode.DISTRIBUTED and args.n_gpu > 1:
        args._n_gpu = 1
    return args


@functools.cache
def _trainer_class() -> type:
    """SFTTrainer with the hand loop's warmup (``int(warmup_ratio x optimizer steps)``) and no telemetry."""
    from trl import SFTTrainer

    class Trainer(SFTTrainer):  # type: ignore[misc]
        warmup_ratio = 0.0

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                self.args.warmup_steps = int(self.warmup_ratio * num_training_steps)
            return super().create_scheduler(num_training_steps, optimizer)

        def _send_telemetry(self) -> None:  # a benchmark's cells are not usage to report
            pass

    return Trainer


class _Diverged(Exception):
    def __init__(self, loss: float, step: int, total: int) -> None:
        super().__init__(loss)
        self.loss, self.step, self.total = loss, step, total


@functools.cache
def _hooks_class() -> type:
    from transformers import TrainerCallback

    class Hooks(TrainerCallback):  # type: ignore[misc]
        """Progress after every optimizer step; a non-finite logged loss stops training (``_Diverged``)."""

        def __init__(self, progress: Callable[[int, int], None] | None) -> None:
            self.progress = progress

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress(state.global_step, state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise _Diverged(loss, state.global_step, state.max_steps)

    return Hooks


def _latest_checkpoint(folder: Path | None) -> Path | None:
    """The newest complete ``checkpoint-N`` in ``folder`` (trainer_state.json is written last)."""
    if folder is None or not Path(folder).is_dir():
        return None
    done = [p for p in Path(folder).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file()]
    return max(done, key=_step_of, default=None)


def _step_of(checkpoint: Path) -> int:
    return int(Path(checkpoint).name.split("-")[-1])


class _quiet_datasets:
    """No progress bars from the trainer's dataset preparation (map/filter), restored afterwards."""

    def __enter__(self) -> None:
        import datasets

        self.enabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()

    def __exit__(self, *exc: Any) -> None:
        import datasets

        if self.enabled:
            datasets.enable_progress_bars()


def _fields(obj: Any) -> dict[str, Any]:
    """A config object's own fields (nested configs left out: they are snapshotted on their own)."""
    from transformers import PretrainedConfig

    return {k: copy.deepcopy(v) for k, v in vars(obj).items() if not isinstance(v, PretrainedConfig)}


def _put_back(obj: Any, saved: dict[str, Any]) -> None:
    from transformers import PretrainedConfig

    for key in [k for k, v in vars(obj).items() if k not in saved and not isinstance(v, PretrainedConfig)]:
        del obj.__dict__[key]
    for key, value in saved.items():
        if key not in vars(obj) or vars(obj)[key] != value:
            obj.__dict__[key] = value


_MISSING = object()
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
          "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks")


def _snapshot(model: Any, tokenizer: Any) -> Callable[[], None]:
    """What the trainer may change on the shared model and tokenizer; the returned function puts it back.

    TRL patches ``model.forward`` (its fused LM head); Trainer sets ``config.use_cache``, aligns the
    configs' special tokens with the tokenizer, enables gradient checkpointing and an input-grad
    hook; peft freezes every base weight; training leaves the model in train mode.
    """
    configs = {id(c): c for c in (model.config, model.config.get_text_config())}.values()
    saved_configs = [(c, _fields(c)) for c in configs]
    generation = getattr(model, "generation_config", None)
    saved_generation = _fields(generation) if generation is not None else None
    own = {key: vars(model).get(key, _MISSING) for key in ("forward", "model_tags", "_require_grads_hooks",
                                                           "_require_grads_hook")}
    training = model.training
    checkpointing = getattr(model, "is_gradient_checkpointing", False)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    hooks = {id(m): {d: set(getattr(m, d, {})) for d in _HOOKS} for m in model.modules()}
    pad_token = tokenizer.pad_token

    def restore() -> None:
        if getattr(model, "is_gradient_checkpointing", False) and not checkpointing:
            model.gradient_checkpointing_disable()
        for module in model.modules():  # e.g. the input-grad hook, registered more than once and so not all undone
            for name, kept in hooks.get(id(module), {}).items():
                registry = getattr(module, name, {})
                for handle_id in [h for h in registry if h not in kept]:
                    del registry[handle_id]
        for key, value in own.items():
            if value is _MISSING:
                vars(model).pop(key, None)
            else:
                vars(model)[key] = value
        for config, fields in saved_configs:
            _put_back(config, fields)
        if generation is not None and saved_generation is not None:
            _put_back(generation, saved_generation)
        for name, param in model.named_parameters():
            param.requires_grad_(requires_grad.get(name, param.requires_grad))
        model.train(training)
        if tokenizer.pad_token != pad_token:
            tokenizer.pad_token = pad_token

    return restore
