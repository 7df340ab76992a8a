"""The pieces of a run checked one at a time: which tasks a cell is scored on (in or out of domain),
the fine-tuning loss mask, and the model folder hashed once per run."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import ensure_arith_plugin
from spd_bench.config import RunConfig, make_config, parse_set
from spd_bench.engine.finetune import collate
from spd_bench.engine.pipeline import Pipeline
from spd_bench.engine.plan import Plan, _domains, make_plan
from spd_bench.registry import TASKS
from spd_bench.store import ArtifactStore
from spd_bench.tasks import SOURCES, TaskSpec, get_source, get_task


def task(name: str, source: str | None = None, ood: tuple[str, ...] = ()) -> TaskSpec:
    return TaskSpec(name=name, description=name, kind="math", scorer="lmeval_generate", data="x:y",
                    training_source=source, ood=ood)


# ---- in-domain and out-of-domain tasks ---------------------------------------------------------
def test_a_task_named_in_ood_is_scored_out_of_domain_only_for_that_tasks_source():
    tasks = {t.name: t for t in (task("a", "src_a", ood=("held",)), task("b", "src_b"), task("held"), task("loose"))}
    assert _domains(tasks) == {
        "src_a": [("a", "in"), ("held", "out"), ("loose", "out")],
        "src_b": [("b", "in"), ("loose", "out")],
    }


def test_without_ood_partners_every_untrained_task_is_out_of_domain_for_every_source():
    tasks = {t.name: t for t in (task("b", "src_b"), task("loose"), task("a", "src_a"))}
    assert _domains(tasks) == {"src_a": [("a", "in"), ("loose", "out")], "src_b": [("b", "in"), ("loose", "out")]}


def test_a_task_with_its_own_source_is_never_out_of_domain_for_another():
    """ood naming a trained task, or a task not requested, changes nothing."""
    tasks = {t.name: t for t in (task("a", "src_a", ood=("b", "not_requested")), task("b", "src_b"))}
    assert _domains(tasks) == {"src_a": [("a", "in")], "src_b": [("b", "in")]}


def test_no_training_source_means_no_source_to_train_on():
    assert _domains({"loose": task("loose")}) == {}


@pytest.fixture
def plugin_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """arith (plugin) plus a second source whose task names ``held`` as out of domain, and an unpaired ``loose``."""
    ensure_arith_plugin()
    arith = get_task("arith")
    entries = {
        "arith_b": replace(arith, name="arith_b", training_source="arith_train_b", ood=("held",), groups=()),
        "held": replace(arith, name="held", training_source=None, groups=()),
        "loose": replace(arith, name="loose", training_source=None, groups=()),
    }
    for name, spec in entries.items():
        monkeypatch.setitem(TASKS._entries, name, spec)
        monkeypatch.setitem(TASKS._sources, name, "plugin")
    monkeypatch.setitem(SOURCES._entries, "arith_train_b", replace(get_source("arith_train"), name="arith_train_b"))
    monkeypatch.setitem(SOURCES._sources, "arith_train_b", "plugin")


def plan_for(tasks: list[str], model_cache: Path, tmp_path: Path) -> Plan:
    flags = {"model": "tiny-llama", "methods": ["base", "raw_sd"], "tasks": tasks, "seeds": [1, 2],
             "output_dir": str(tmp_path / "results"), "cache_dir": str(model_cache)}
    return make_plan(make_config({}, flags))


def cells(plan: Plan) -> dict[tuple[str, str | None, int | None], list[tuple[str, str]]]:
    return {(cell.method, cell.source, cell.seed): cell.tasks for cell in plan.cells}


def test_plan_scores_each_source_on_its_task_and_its_ood_partners(plugin_tasks: None, model_cache: Path, tmp_path: Path):
    plan = plan_for(["arith", "arith_b", "held", "loose"], model_cache, tmp_path)
    assert list(plan.sources) == ["arith_train", "arith_train_b"]
    train_a = [("arith", "in"), ("loose", "out")]
    train_b = [("arith_b", "in"), ("held", "out"), ("loose", "out")]
    assert cells(plan) == {
        ("base", None, None): [("arith", "in"), ("arith_b", "in"), ("held", "out"), ("loose", "out")],
        ("raw_sd", "arith_train", 1): train_a, ("raw_sd", "arith_train", 2): train_a,
        ("raw_sd", "arith_train_b", 1): train_b, ("raw_sd", "arith_train_b", 2): train_b,
    }


def test_plan_without_ood_partners_scores_the_other_tasks_out_of_domain(plugin_tasks: None, model_cache: Path,
                                                                        tmp_path: Path):
    plan = plan_for(["loose", "arith"], model_cache, tmp_path)
    assert list(plan.sources) == ["arith_train"]
    assert cells(plan) == {
        ("base", None, None): [("loose", "out"), ("arith", "in")],
        ("raw_sd", "arith_train", 1): [("arith", "in"), ("loose", "out")],
        ("raw_sd", "arith_train", 2): [("arith", "in"), ("loose", "out")],
    }


# ---- the fine-tuning loss mask ---------------------------------------------------------------
# (tokens, prompt length): the last one is all prompt, as when max_length cut the completion off.
BATCH = [([11, 12, 13, 14, 15], 2), ([21, 22, 23], 1), ([31, 32], 2)]
PAD = 7
X = -100


def test_collate_pads_on_the_right_and_masks_the_padding():
    ids, mask, _ = collate(BATCH, PAD, "all")
    assert ids.tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, PAD, PAD], [31, 32, PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]


def test_loss_on_all_trains_on_prompt_and_completion_but_not_the_first_token_or_padding():
    _, _, labels = collate(BATCH, PAD, "all")
    assert labels.tolist() == [[X, 12, 13, 14, 15], [X, 22, 23, X, X], [X, 32, X, X, X]]


def test_loss_on_completion_leaves_the_prompt_out():
    _, _, labels = collate(BATCH, PAD, "completion")
    assert labels.tolist() == [[X, X, 13, 14, 15], [X, 22, 23, X, X], [X, X, X, X, X]]


# ---- the model, resolved once ----------------------------------------------------------------
TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def test_a_cached_chat_run_hashes_the_model_folder_once(model_cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """The stage keys and the chat rendering share one resolution of the model (its folder hash is costly)."""
    from spd_bench import models

    ensure_arith_plugin()
    folder = tmp_path / "chat-model"
    shutil.copytree(models.load_model("tiny-llama", model_cache).path, folder)
    tokenizer = models.load_tokenizer(folder)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    flags = {"model": str(folder), "methods": ["base"], "tasks": ["arith"], "output_dir": str(tmp_path / "results"),
             "cache_dir": str(tmp_path / "cache")}
    config: RunConfig = make_config(parse_set(["prompt_format=chat"]), flags)
    plan = make_plan(config)
    Pipeline(config, plan, ArtifactStore(tmp_path / "cache")).run()
    hashed: list[Path] = []
    real = models._hash_folder
    monkeypatch.setattr(models, "_hash_folder", lambda path: hashed.append(path) or real(path))
    pipeline = Pipeline(config, plan, ArtifactStore(tmp_path / "cache"))
    pipeline.run()
    assert [entry["cached"] for entry in pipeline.stage_log] == [True]
    assert hashed == [folder.resolve()]
