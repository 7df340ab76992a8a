"""Fine-tuning through TRL's SFTTrainer: the loss mask is collate's, seeds reproduce adapters, the
shared base model comes back untouched, accumulation and resumption keep the numbers, bad options
stop at planning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import run_arith
from spd_bench.config import TrainConfig, make_config
from spd_bench.engine import finetune
from spd_bench.engine.finetune import collate, loss_labels, train_lora
from spd_bench.errors import UserError
from spd_bench.method import TrainSpec
from spd_bench.models import LoadedModel, load_model
from spd_bench.spans import encode_example

# Distinct prompts of varied lengths; the last pair's completion lies beyond max_length (all prompt).
PAIRS = [(f"Question {i}: what is {i} plus {i * 3}?" + " Think." * (i % 3), f" It is {i + i * 3}." + " Yes" * (i % 4))
         for i in range(15)] + [("A long prompt " * 20, " cut off")]
# No dropout: runs differ only where the test wants them to (seed, batching).
TRAIN = TrainConfig(lr=1e-3, epochs=2, batch_size=4, max_length=48, lora_dropout=0.0)


@pytest.fixture(scope="module")
def tiny(model_cache: Path) -> LoadedModel:
    return load_model("tiny-llama", model_cache, "cpu", "float32")


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def fit(tiny: LoadedModel, out: Path, train: TrainConfig = TRAIN, loss_on: str = "completion", seed: int = 1,
        **kwargs: Any) -> dict[str, Any]:
    return train_lora(tiny.model, tiny.tokenizer, PAIRS, train, TrainSpec(loss_on=loss_on), seed, out, **kwargs)


# ---- (1) the loss mask ------------------------------------------------------------------------
@pytest.mark.parametrize("loss_on", ["completion", "all"])
def test_the_trainers_batches_are_collates_batches(tiny: LoadedModel, tmp_path: Path, loss_on: str,
                                                   monkeypatch: pytest.MonkeyPatch):
    """Every batch the trainer's collator builds equals ``collate`` of the same examples: the same ids,
    attention mask and labels, so exactly collate's tokens carry loss. An example without a loss token
    (cut off by max_length) is the one difference: TRL drops it instead of padding batches with it."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    batches: list[dict[str, torch.Tensor]] = []
    real = DataCollatorForLanguageModeling.torch_call
    monkeypatch.setattr(DataCollatorForLanguageModeling, "torch_call",
                        lambda self, examples: batches.append(real(self, examples)) or batches[-1])
    encoded = {}
    for prompt, completion in PAIRS:
        example = encode_example(tiny.tokenizer, prompt, completion, max_length=TRAIN.max_length)
        encoded[tuple(example.input_ids)] = example.prompt_len
    assert len(encoded) == len(PAIRS)
    info = fit(tiny, tmp_path / "out", replace(TRAIN, epochs=1), loss_on=loss_on)

    seen = []
    for batch in batches:
        rows = [tuple(ids[: int(mask.sum())].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        ids, mask, labels = collate([(list(row), encoded[row]) for row in rows], tiny.tokenizer.pad_token_id, loss_on)
        assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"], mask)
        assert torch.equal(batch["labels"], labels)
        seen += rows
    learnable = {row for row, prompt_len in encoded.items() if any(t != -100 for t in loss_labels(list(row), prompt_len, loss_on))}
    assert sorted(seen) == sorted(learnable)  # each once per epoch
    assert len(learnable) == len(PAIRS) - (loss_on == "completion")  # the cut-off pair has no completion token
    assert info["n_loss_tokens_per_epoch"] == sum((collate([(list(r), p)], 0, loss_on)[2] != -100).sum().item()
                                                  for r, p in encoded.items())
    # The first step's loss is the base model's mean loss over collate's label tokens (LoRA's B starts
    # at zero): the trainer takes the loss on these tokens, with the same reduction.
    with torch.no_grad():
        first = tiny.model(input_ids=batches[0]["input_ids"], attention_mask=batches[0]["attention_mask"],
                           labels=batches[0]["labels"]).loss
    assert info["loss_first"] == pytest.approx(float(first), rel=1e-5)


def test_loss_labels_match_collate_on_the_hand_written_batch():
    batch = [([11, 12, 13, 14, 15], 2), ([21, 22, 23], 1), ([31, 32], 2)]
    for loss_on in ("all", "completion"):
        _, _, labels = collate(batch, 7, loss_on)
        assert [row[: len(tokens)] for row, (tokens, _) in zip(labels.tolist(), batch)] == [
            loss_labels(tokens, prompt_len, loss_on) for tokens, prompt_len in batch]


def hand_loop(tiny: LoadedModel, train: TrainConfig, loss_on: str, seed: int, out: Path) -> list[float]:
    """The hand-written loop the trainer replaced, for one batch per epoch (its shuffle then changes nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup

    encoded = [(e.input_ids, e.prompt_len) for e in (encode_example(tiny.tokenizer, p, c, max_length=train.max_length)
                                                     for p, c in PAIRS)]
    assert train.batch_size >= len(encoded)
    grads = {name: p.requires_grad for name, p in tiny.model.named_parameters()}
    torch.manual_seed(seed)
    model = get_peft_model(tiny.model, LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                                                  target_modules=list(train.target_modules), task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(train.warmup_ratio * train.epochs), train.epochs)
    losses = []
    for _epoch in range(train.epochs):
        ids, mask, labels = collate(encoded, tiny.tokenizer.pad_token_id, loss_on)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    model.save_pretrained(out)
    model.unload()
    for name, param in tiny.model.named_parameters():
        param.requires_grad_(grads[name])
    return losses


def test_with_one_batch_per_epoch_the_trainer_trains_like_the_hand_loop(tiny: LoadedModel, tmp_path: Path):
    """Same LoRA initialisation, AdamW, weight decay, clipping and warmup + cosine schedule: with the
    whole corpus in one batch (so that batch order cannot matter) both give the same adapter."""
    train = replace(TRAIN, batch_size=16, epochs=4, warmup_ratio=0.25)  # 1 warmup step of 4
    reference = hand_loop(tiny, train, "all", 3, tmp_path / "hand")
    info = fit(tiny, tmp_path / "trl", train, loss_on="all", seed=3)
    assert info["loss_curve"] == pytest.approx(reference, rel=1e-5)
    assert [point["learning_rate"] for point in info["train_curve"]] == pytest.approx([0.0, 1e-3, 7.5e-4, 2.5e-4], abs=1e-12)
    a, b = adapter(tmp_path / "hand"), adapter(tmp_path / "trl")
    assert a.keys() == b.keys() and all(torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6) for name in a)


# ---- (2) seeds ---------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_adapter_and_another_seed_another(tiny: LoadedModel, tmp_path: Path):
    train = replace(TRAIN, lora_dropout=0.05)  # dropout draws from the seeded generator too
    first = fit(tiny, tmp_path / "a", train, seed=1)
    again = fit(tiny, tmp_path / "b", train, seed=1)
    other = fit(tiny, tmp_path / "c", train, seed=2)
    a, b, c = adapter(tmp_path / "a"), adapter(tmp_path / "b"), adapter(tmp_path / "c")
    assert a.keys() == b.keys() == c.keys() and a
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert first["loss_curve"] == again["loss_curve"]
    assert not all(torch.equal(a[name], c[name]) for name in a)
    assert other["loss_curve"] != first["loss_curve"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["README.md", "adapter_config.json",
                                                                  "adapter_model.safetensors"]


# ---- (3) the shared base model --------------------------------------------------------------
def test_the_base_model_comes_back_unchanged_and_unwrapped(tiny: LoadedModel, tmp_path: Path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = tiny.model
    probe = torch.tensor([[1, 5, 9, 12, 30, 7]])
    with torch.no_grad():
        logits = model(probe).logits
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    modules = [(name, type(module)) for name, module in model.named_modules()]
    config, generation = model.config.to_dict(), model.generation_config.to_dict()
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    hooks = {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}
    pad = tiny.tokenizer.pad_token
    fit(tiny, tmp_path / "checkpointed", replace(TRAIN, gradient_checkpointing=True))  # more to undo
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in weights.items())
    assert [(name, type(module)) for name, module in model.named_modules()] == modules
    assert not any(isinstance(module, BaseTunerLayer) for module in model.modules())
    assert not hasattr(model, "peft_config") and "forward" not in vars(model)  # TRL's fused-head patch is gone
    assert (model.config.to_dict(), model.generation_config.to_dict()) == (config, generation)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads
    assert {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()} == hooks
    assert not model.training and not model.is_gradient_checkpointing and tiny.tokenizer.pad_token == pad
    with torch.no_grad():
        assert torch.equal(model(probe).logits, logits)
    # and gradient checkpointing trained the adapter as plain backpropagation does
    fit(tiny, tmp_path / "plain", TRAIN)
    a, b = adapter(tmp_path / "checkpointed"), adapter(tmp_path / "plain")
    assert all(torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6) for name in a)
    assert not all(torch.equal(a[name], torch.zeros_like(a[name])) for name in a if "lora_B" in name)


# ---- (4) gradient accumulation ----------------------------------------------------------------
def test_accumulating_two_batches_of_four_halves_the_optimizer_steps(tiny: LoadedModel, tmp_path: Path):
    """2 x 4 takes half the optimizer steps of 1 x 4, and trains like 1 x 8: the sampler draws the same
    order and the loss is a mean over every label token of the accumulated batch."""
    single = fit(tiny, tmp_path / "4", replace(TRAIN, batch_size=4))
    accumulated = fit(tiny, tmp_path / "2x4", replace(TRAIN, batch_size=8, per_device_batch_size=4,
                                                      gradient_accumulation_steps=2))
    whole = fit(tiny, tmp_path / "8", replace(TRAIN, batch_size=8))
    assert single["steps"] == 8 and accumulated["steps"] == whole["steps"] == 4  # 15 learnable examples, 2 epochs
    assert accumulated["loss_curve"] == pytest.approx(whole["loss_curve"], rel=1e-4)
    a, w = adapter(tmp_path / "2x4"), adapter(tmp_path / "8")
    assert all(torch.allclose(a[name], w[name], rtol=1e-3, atol=1e-5) for name in a)


DDP_SCRIPT = """
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, {tests!r})
import test_finetune as t
from spd_bench.models import load_model

tiny = load_model("tiny-llama", Path({cache!r}), "cpu", "float32")
t.fit(tiny, Path(sys.argv[1]), replace(t.TRAIN, batch_size=8), loss_on="all")
"""


@pytest.mark.slow
def test_two_data_parallel_processes_train_like_one(tiny: LoadedModel, model_cache: Path, tmp_path: Path):
    """``torchrun --nproc_per_node 2`` (what ``accelerate launch`` starts on GPUs; gloo on CPUs): each
    process takes 4 of every 8 examples, the gradients are averaged, and only the main process writes.
    (All 16 examples carry loss, so that no batch is short: accelerate would pad a short last batch
    with repeated examples on some process.)"""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), cache=str(model_cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fit(tiny, tmp_path / "one", replace(TRAIN, batch_size=8), loss_on="all")
    a, b = adapter(tmp_path / "two"), adapter(tmp_path / "one")
    assert a.keys() == b.keys() and all(torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6) for name in a)


# ---- (5) checkpoints and resumption -------------------------------------------------------------
class Crash(Exception):
    pass


def crash_after(step: int):
    def progress(done: int, _total: int) -> None:
        if done == step:
            raise Crash(f"killed after step {done}")
    return progress


def test_an_interrupted_fine_tune_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(
        tiny: LoadedModel, tmp_path: Path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    train = replace(TRAIN, lora_dropout=0.05, save_steps=3)  # 8 steps, 4 an epoch: checkpoints at 3 and 6
    straight = fit(tiny, tmp_path / "straight", replace(train, save_steps=0))
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        fit(tiny, tmp_path / "killed", train, checkpoint_dir=checkpoints, progress=crash_after(7))
    assert not any(isinstance(module, BaseTunerLayer) for module in tiny.model.modules())
    assert not (tmp_path / "killed").exists()
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-6"]  # save_total_limit=1
    steps: list[int] = []
    resumed = fit(tiny, tmp_path / "resumed", train, checkpoint_dir=checkpoints,
                  progress=lambda done, _total: steps.append(done))
    assert resumed["resumed_from_step"] == 6 and steps == [7, 8] and resumed["steps"] == straight["steps"] == 8
    assert resumed["loss_curve"] == straight["loss_curve"]
    a, b = adapter(tmp_path / "straight"), adapter(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_the_train_stage_checkpoints_under_its_key_and_removes_them_when_done(model_cache: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    seen: list[tuple[Path, list[str]]] = []
    real = finetune.train_lora

    def spy(*args: Any, checkpoint_dir: Path | None = None, **kwargs: Any) -> dict[str, Any]:
        info = real(*args, checkpoint_dir=checkpoint_dir, **kwargs)
        seen.append((checkpoint_dir, sorted(p.name for p in checkpoint_dir.iterdir())))
        return info

    monkeypatch.setattr(finetune, "train_lora", spy)
    cache = tmp_path / "cache"
    run_arith(tmp_path, cache, "tiny-llama", ("raw_sd",), ("train.save_steps=1", "train.epochs=1", "n_train=8"))
    [(folder, names)] = seen
    [train_key] = [p.name for p in (cache / "train").iterdir() if p.is_dir()]
    assert folder == cache / "checkpoints" / train_key and any(name.startswith("checkpoint-") for name in names)
    assert not folder.exists()


# ---- (6) options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("train", "says"), [
    ({"precision": "fp8"}, "train.precision = 'fp8'"),
    ({"gradient_accumulation_steps": 0}, "train.gradient_accumulation_steps = 0"),
    ({"batch_size": 8, "gradient_accumulation_steps": 3}, "train.batch_size = 8"),
    ({"batch_size": 8, "per_device_batch_size": 3}, "train.per_device_batch_size = 3"),
    ({"per_device_batch_size": 0}, "train.per_device_batch_size = 0"),
    ({"save_steps": -1}, "train.save_steps = -1"),
    ({"report_to": ["wandb"]}, "pip install wandb"),
    ({"report_to": ["telepathy"]}, "train.report_to = 'telepathy'"),
    ({"packing": "maybe"}, "train.packing"),
])
def test_a_bad_training_option_stops_with_one_line(train: dict[str, Any], says: str):
    with pytest.raises(UserError) as caught:
        make_config({"train": train})
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_effective_batch_counts_every_process(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert make_config({"train": {"batch_size": 8, "gradient_accumulation_steps": 2}}).train.per_device(2) == 2
    with pytest.raises(UserError, match=r"train.per_device_batch_size = 8 .* = 2, or leave it out"):
        make_config({"train": {"batch_size": 8, "per_device_batch_size": 8, "gradient_accumulation_steps": 2}})


def test_defaults_reproduce_the_hand_loop():
    train = TrainConfig()
    assert (train.precision, train.gradient_checkpointing, train.gradient_accumulation_steps, train.packing,
            train.save_steps, train.report_to) == ("auto", False, 1, False, 0, [])
    assert train.per_device() == train.batch_size


def test_a_diverging_fine_tune_writes_nothing_and_says_so(tiny: LoadedModel, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError, match="training diverged; lower train.lr") as caught:
        fit(tiny, out, replace(TRAIN, lr=1e30, schedule="constant"))
    assert "\n" not in str(caught.value) and list(out.iterdir()) == []
    assert "forward" not in vars(tiny.model)


def test_packing_trains_on_the_same_tokens_in_fewer_steps(tiny: LoadedModel, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """Packed rows (TRL's best-fit packing, padding-free: each example keeps its own positions, and
    attention stays within it) carry the same loss tokens as the padded batches."""
    from collections import Counter

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    batches: list[dict[str, torch.Tensor]] = []
    real = DataCollatorForLanguageModeling.torch_call
    monkeypatch.setattr(DataCollatorForLanguageModeling, "torch_call",
                        lambda self, examples: batches.append(real(self, examples)) or batches[-1])
    train = replace(TRAIN, epochs=1, max_length=256)  # rows long enough to hold several examples
    packed = fit(tiny, tmp_path / "packed", replace(train, packing=True))
    packed_batches, batches[:] = list(batches), []
    plain = fit(tiny, tmp_path / "plain", train)

    def loss_tokens(found: list[dict[str, torch.Tensor]]) -> Counter:
        return Counter(t for batch in found for t in batch["labels"].flatten().tolist() if t != -100)

    assert packed["steps"] < plain["steps"]
    assert loss_tokens(packed_batches) == loss_tokens(batches)
    assert all("attention_mask" not in batch and int((batch["position_ids"] == 0).sum()) > 1 for batch in packed_batches)


# ---- experiment trackers ------------------------------------------------------------------------
TRACKED = """
import json, sys
from pathlib import Path
from spd_bench.config import TrainConfig
from spd_bench.engine.finetune import train_lora
from spd_bench.method import TrainSpec
from spd_bench.models import load_model
cache, out = Path(sys.argv[1]), Path(sys.argv[2])
tiny = load_model("tiny-llama", cache, "cpu", "float32")
pairs = [(f"Q {i} plus {i}?", f" It is {2 * i}.") for i in range(8)]
train = TrainConfig(lr=1e-3, epochs=2, batch_size=4, max_length=48, lora_dropout=0.0, report_to=["trackio"])
info = train_lora(tiny.model, tiny.tokenizer, pairs, train, TrainSpec(loss_on="completion"), 1, out / "adapter")
from trackio.sqlite_storage import SQLiteStorage
projects = SQLiteStorage.get_projects()
logs = [row for project in projects for run in SQLiteStorage.get_runs(project)
        for row in SQLiteStorage.get_logs(project, run)]
print(json.dumps({"curve": info["train_curve"], "logs": logs}, default=str))
"""


def test_training_curves_reach_trackio_when_asked(model_cache: Path, tmp_path: Path):
    """report_to: [trackio] logs the fine-tune's curve to trackio's local store (no server, no hub)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", TRACKED, str(model_cache), str(tmp_path)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    logged = [row["train/loss"] for row in report["logs"] if "train/loss" in row]
    assert logged and logged == pytest.approx([point["loss"] for point in report["curve"] if "loss" in point])
    assert (tmp_path / "trackio").is_dir()
