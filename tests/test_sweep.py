"""`spd-bench sweep`: axes from --set and YAML, one shared cache, ablation tables rebuilt from records."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ARITH_PLUGIN, REPO, spd_bench_cmd
from helpers import ensure_arith_plugin
from spd_bench.config import load_yaml
from spd_bench.errors import UserError
from spd_bench.leaderboard.ablation import AblationCell, AblationRow, Delta, _domain_means, _sections, build_ablation
from spd_bench.leaderboard.stats import CellStats
from spd_bench.leaderboard.table import Column
from spd_bench import cli, sweep as sweep_module
from spd_bench.sweep import SweepSpec, _overrides, combine, manifest, plan_sweep, spec_from_yaml, split_sets

SMALL = ["--model", "tiny-llama", "--tasks", "arith", "--seeds", "1,2", "--limit", "4", "--n-train", "8",
         "--set", "train.epochs=1"]
SPD_SMALL = ["--set", "method_options.spd.n_calibration=4", "--set", "method_options.spd_random.n_calibration=4"]
AXIS = "method_options.spd.loss_on"


def sweep_cmd(out: Path, cache: Path, *extra: str) -> list[str]:
    return spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "--quiet", "sweep", "--methods", "spd", *SMALL, *SPD_SMALL,
                         "--output", str(out), "--cache-dir", str(cache), *extra)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep over a post-sampling option (two values, two seeds) and one ordinary run, side by side."""
    root = tmp_path_factory.mktemp("sweep")
    out, cache = root / "results", root / "cache"
    run = subprocess.run(spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "--quiet", "run", "--methods", "base,raw_sd",
                                       *SMALL, "--output", str(out), "--cache-dir", str(cache), "--no-leaderboard"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = subprocess.run(sweep_cmd(out, cache, "--set", f"{AXIS}=all,completion", "--name", "loss"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _record(folder: Path, name: str) -> dict:
    return json.loads((folder / "records/tiny-llama/arith" / name).read_text())


@pytest.mark.slow
def test_a_post_sampling_axis_reuses_the_samples_and_trains_each_setting(swept: Path):
    sweep = swept / "sweeps/loss"
    for seed in (1, 2):
        first = _record(sweep / "spd.loss_on=all", f"spd-seed{seed}.json")
        second = _record(sweep / "spd.loss_on=completion", f"spd-seed{seed}.json")
        assert first["method_info"]["options"]["loss_on"] == "all"
        assert second["method_info"]["options"]["loss_on"] == "completion"
        assert first["provenance"]["stage_keys"]["sample"] == second["provenance"]["stage_keys"]["sample"]
        assert second["provenance"]["stage_cached"]["sample"] is True
        assert first["provenance"]["stage_keys"]["train"] != second["provenance"]["stage_keys"]["train"]
        assert second["provenance"]["stage_cached"]["train"] is False
    references = sorted(p.name for p in (sweep / "reference/records/tiny-llama/arith").glob("*.json")
                        if p.name.count(".") == 1)  # records, not the files beside them
    assert references == ["base.json", "raw_sd-seed1.json", "raw_sd-seed2.json", "spd_random-seed1.json",
                          "spd_random-seed2.json"]
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert manifest["axes"] == [AXIS] and manifest["values"][AXIS] == ["all", "completion"]
    assert "--set method_options.spd.loss_on=all,completion" in manifest["command"]


@pytest.mark.slow
def test_the_ablation_table_has_the_mean_over_seeds_of_each_setting(swept: Path, tmp_path: Path):
    """Per-item scores rewritten to known values: the table's means and deltas are recomputed here from the records."""
    sweep = tmp_path / "loss"
    shutil.copytree(swept / "sweeps/loss", sweep)
    rng = np.random.default_rng(0)
    expected: dict[str, float] = {}
    items: dict[str, dict[int, np.ndarray]] = {}
    for setting, method in (("spd.loss_on=all", "spd"), ("spd.loss_on=completion", "spd"), ("reference", "raw_sd")):
        for seed in (1, 2):
            path = sweep / setting / "records/tiny-llama/arith" / f"{method}-seed{seed}.json"
            record = json.loads(path.read_text())
            samples = path.parent / record["samples_file"]
            rows = [json.loads(line) for line in samples.read_text().splitlines()]
            scores = rng.integers(0, 2, size=len(rows)).astype(float)
            samples.write_text("".join(json.dumps({**row, "score": s}) + "\n" for row, s in zip(rows, scores)))
            record["metrics"][record["primary_metric"]] = float(scores.mean())
            path.write_text(json.dumps(record))
            items.setdefault(setting, {})[seed] = scores
        expected[setting] = float(np.mean([items[setting][s].mean() for s in (1, 2)]))
    ablation = build_ablation(sweep)
    (section,) = ablation.sections
    assert [row.values[AXIS] for row in section.rows] == ["all", "completion"]
    for row in section.rows:
        cell = row.cells[("arith", "in")]
        assert cell.stats.mean == pytest.approx(expected[row.setting])
        assert cell.stats.n_seeds == 2
        paired = np.mean([items[row.setting][s] - items["reference"][s] for s in (1, 2)])
        assert cell.delta.value == pytest.approx(paired)
        assert cell.delta.interval is not None
    assert ablation.references["raw_sd"][("arith", "in")].mean == pytest.approx(expected["reference"])


@pytest.mark.slow
def test_the_leaderboard_rebuilds_the_sweep_files_and_leaves_sweeps_out_of_the_main_board(swept: Path):
    sweep = swept / "sweeps/loss"
    files = {name: (sweep / f"ablation.{name}").read_bytes() for name in ("md", "csv", "tex", "html", "png")}
    for name in files:
        (sweep / f"ablation.{name}").unlink()
    result = subprocess.run(spd_bench_cmd("leaderboard", "--results", str(swept)), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: (sweep / f"ablation.{name}").read_bytes() for name in files} == files
    with (swept / "leaderboard.csv").open() as board:
        assert {row["method"] for row in csv.DictReader(board)} == {"base", "raw_sd"}  # the sweep's records stay out
    assert "_How to read:" in files["md"].decode() and "How to read:" in files["html"].decode()


@pytest.mark.parametrize("setting, message", [
    ("method_options.spd.rank_fraction=0.5,1.5", "rank_fraction = 1.5 is out of range"),
    ("method_options.spd.bogus=1,2", "bogus"),
    ("train.nonsense=1,2", "unknown config field train.nonsense"),
    ("method_options.sdp.rank=1,2", "method_options for 'sdp', which is not among --methods"),
])
def test_a_bad_axis_fails_before_any_work_and_writes_nothing(tmp_path: Path, setting: str, message: str):
    out, cache = tmp_path / "results", tmp_path / "cache"
    result = subprocess.run(sweep_cmd(out, cache, "--set", setting), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not cache.exists()


def test_set_values_with_several_items_are_axes_and_brackets_keep_a_list_whole():
    plain, axes = split_sets(["train.lr=1e-4", "method_options.spd.layers=[0,3]", "method_options.spd.project=k,v",
                              "method_options.spd.layers_x=[0,1],[2]", "train.target_modules=[q_proj,v_proj]"])
    assert plain == ["train.lr=1e-4", "method_options.spd.layers=[0,3]", "train.target_modules=[q_proj,v_proj]"]
    assert axes == {"method_options.spd.project": ["k", "v"], "method_options.spd.layers_x": [[0, 1], [2]]}


def test_one_at_a_time_varies_each_axis_alone_and_a_flag_replaces_the_files_axis():
    spec = combine(SweepSpec({"a": [1, 2], "b": ["x", "y"]}, "one_at_a_time"), {"b": ["z", "w"]}, set(), None)
    assert spec.axes == {"a": [1, 2], "b": ["z", "w"]}
    assert _overrides(spec) == [{}, {"a": 1}, {"a": 2}, {"b": "z"}, {"b": "w"}]
    assert len(_overrides(combine(spec, {}, set(), "grid"))) == 4
    assert combine(spec, {}, {"a"}, None).axes == {"b": ["z", "w"]}  # a single --set value overrides the axis


def test_the_paper_ablations_config_is_a_one_at_a_time_sweep_over_the_papers_axes():
    data = load_yaml(REPO / "configs/paper_ablations.yaml")
    spec = spec_from_yaml(data.pop("sweep"), "paper_ablations.yaml")
    assert spec.mode == "one_at_a_time"
    assert set(spec.axes) == {f"method_options.spd.{name}" for name in
                              ("rank_fraction", "layers", "project", "calibration_loss")}
    defaults = data["method_options"]["spd"]
    for axis, values in spec.axes.items():
        assert defaults[axis.rsplit(".", 1)[-1]] in values  # the paper's default is one of the values


def test_an_axis_outside_the_swept_methods_options_runs_the_references_in_every_setting(tmp_path: Path,
                                                                                         model_cache: Path):
    """train.lr changes raw_sd too: no shared reference folder; an axis value at the default is not run twice."""
    ensure_arith_plugin()
    flags = {"model": "tiny-llama", "tasks": ["arith"], "seeds": [1], "methods": ["spd"],
             "output_dir": str(tmp_path / "results"), "cache_dir": str(model_cache)}
    data = {"method_options": {"spd": {"n_calibration": 4}, "spd_random": {"n_calibration": 4}}}
    sweep = plan_sweep(data, flags, SweepSpec({"train.lr": [1e-3, 1e-4]}), None)
    assert sweep.reference is None and sweep.name == "lr"
    assert [s.label for s in sweep.settings] == ["train.lr=0.001", "train.lr=0.0001"]
    assert all(sorted(s.config.methods) == ["base", "raw_sd", "spd", "spd_random"] for s in sweep.settings)
    shared = plan_sweep(data, flags, SweepSpec({"method_options.spd.rank_fraction": [0.25, 0.5]}, "one_at_a_time"),
                        "rank")
    assert shared.reference is not None and sorted(shared.reference.config.methods) == ["base", "raw_sd", "spd_random"]
    assert [s.label for s in shared.settings] == ["default", "spd.rank_fraction=0.25"]  # 0.5 is the default
    assert shared.centers == {"method_options.spd.rank_fraction": 0.5}
    assert shared.same_as == {"spd.rank_fraction=0.5": "default"}
    assert not (tmp_path / "results").exists()  # planning writes nothing


def test_one_at_a_time_tables_put_each_axis_in_its_own_block_around_the_default():
    rows = [AblationRow(label, "spd", {"a": a, "b": b}, {}) for label, a, b in
            (("default", 1, "x"), ("a=2", 2, "x"), ("a=3", 3, "x"), ("b=y", 1, "y"))]
    sections = _sections(rows, {"a": [1, 2, 3], "b": ["x", "y"]}, "one_at_a_time", {"a": 1, "b": "x"})
    assert [(s.axes, [r.setting for r in s.rows]) for s in sections] == [
        (["a"], ["default", "a=2", "a=3"]), (["b"], ["default", "b=y"])]
    (grid,) = _sections(rows, {"a": [1, 2, 3], "b": ["x", "y"]}, "grid", {})
    assert [r.setting for r in grid.rows] == ["default", "b=y", "a=2", "a=3"]


def test_a_config_files_sweep_is_checked_like_flags_and_run_refuses_it(tmp_path: Path):
    config = tmp_path / "sweep.yaml"
    config.write_text("sweep:\n  mode: one_at_a_time\n  axes:\n    method_options.spd.project: [k, q]\n")
    out, cache = tmp_path / "results", tmp_path / "cache"
    result = subprocess.run(sweep_cmd(out, cache, "--config", str(config)), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "project = 'q' is not one of" in result.stderr
    run = subprocess.run(spd_bench_cmd("run", "--config", str(REPO / "configs/paper_ablations.yaml"), "--output",
                                       str(out), "--cache-dir", str(cache)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "spd-bench sweep --config" in run.stderr
    assert not out.exists() and not cache.exists()


def test_a_domain_with_several_tasks_gets_a_mean_column_of_means_and_differences():
    def cell(mean: float, delta: float) -> AblationCell:
        return AblationCell(CellStats(mean, None, 2, None), Delta(delta, None, None), (1, 2))

    columns = [Column(task, "in", "acc", True, ()) for task in ("t1", "t2")] + [Column("t3", "out", "acc", True, ())]
    row = AblationRow("a=1", "spd", {"a": 1}, {("t1", "in"): cell(0.2, 0.1), ("t2", "in"): cell(0.4, -0.3),
                                               ("t3", "out"): cell(0.5, 0.0)})
    references = {"raw_sd": {("t1", "in"): CellStats(0.1, None, 2, None), ("t2", "in"): CellStats(0.7, None, 2, None)}}
    (mean_column,) = _domain_means(columns, [row], references)  # one out-of-domain task: no mean column there
    mean = row.cells[(mean_column.task, "in")]
    assert mean.stats.mean == pytest.approx(0.3) and mean.delta.value == pytest.approx(-0.1)
    assert references["raw_sd"][(mean_column.task, "in")].mean == pytest.approx(0.4)


@pytest.mark.slow
def test_a_config_files_sweep_is_named_after_the_file_and_served_from_the_shared_cache(swept: Path, tmp_path: Path):
    config = tmp_path / "loss_ablation.yaml"
    config.write_text(f"sweep:\n  axes:\n    {AXIS}: [all, completion]\n")
    out = tmp_path / "results"
    result = subprocess.run(sweep_cmd(out, swept.parent / "cache", "--config", str(config), "--no-reference"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = out / "sweeps/loss_ablation"
    assert not (sweep / "reference").exists() and (sweep / "ablation.md").is_file()
    for setting in ("spd.loss_on=all", "spd.loss_on=completion"):
        record = _record(sweep / setting, "spd-seed1.json")
        assert all(record["provenance"]["stage_cached"].values())  # every stage from the first sweep's cache


@pytest.mark.slow
def test_a_sweeps_corpus_diagnostics_compare_with_the_reference_raw_sd_as_a_plain_run_does(swept: Path, tmp_path: Path):
    """raw_sd runs once in reference/, yet every setting's spd corpus is compared with its samples."""
    out = tmp_path / "results"
    run = subprocess.run(spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "--quiet", "run", "--methods", "raw_sd,spd",
                                       *SMALL, "--set", "method_options.spd.n_calibration=4", "--output", str(out),
                                       "--cache-dir", str(swept.parent / "cache"), "--no-leaderboard"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for seed in (1, 2):
        plain = _record(out, f"spd-seed{seed}.json")["diagnostics"]["corpus"]["identical_to_raw_sd"]
        assert plain is not None
        for setting in ("spd.loss_on=all", "spd.loss_on=completion"):
            record = _record(swept / "sweeps/loss" / setting, f"spd-seed{seed}.json")
            assert record["diagnostics"]["corpus"]["identical_to_raw_sd"] == plain


def test_sweep_takes_a_bracketed_axis_with_include_path_and_prints_each_plan_note_once(
        tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """The axes are split off before the plain --set items are read; the planned sweep is captured, not run."""
    ensure_arith_plugin()
    planned = []

    def capture(sweep, run_setting, command):
        planned.append(sweep)
        return []

    monkeypatch.setattr(sweep_module, "run_sweep", capture)
    include = tmp_path / "lm_eval_tasks"
    include.mkdir()
    code = cli.main(["sweep", "--methods", "spd", "--model", "tiny-llama", "--tasks",
                     "arith", "--seeds", "1", "--set", "method_options.spd.n_calibration=4", "--set",
                     "method_options.spd_random.n_calibration=4", "--set", "method_options.spd.layers=[0,1],[1]",
                     "--include-path", str(include), "--output", str(tmp_path / "results"), "--cache-dir",
                     str(model_cache), "--no-leaderboard"])
    assert code == 0
    (sweep,) = planned
    assert sweep.spec.axes == {"method_options.spd.layers": [[0, 1], [1]]}
    assert [s.overrides for s in sweep.settings] == [{"method_options.spd.layers": [0, 1]},
                                                     {"method_options.spd.layers": [1]}]
    assert all(str(include) in s.config.lm_eval.include_path for s in sweep.settings)
    out = capsys.readouterr().out
    notes = {note for s in [sweep.reference, *sweep.settings] for note in s.plan.notes}
    assert notes and all(out.count(f"note: {note}") == 1 for note in notes)


def test_axis_values_take_their_fields_type_before_labels_manifest_and_order(tmp_path: Path, model_cache: Path):
    """YAML reads 1e-4 as a string; the sweep reads it as train.lr's float, so 1e-4 and 0.0001 are one value."""
    ensure_arith_plugin()
    flags = {"model": "tiny-llama", "tasks": ["arith"], "seeds": [1], "methods": ["spd"],
             "output_dir": str(tmp_path / "results"), "cache_dir": str(model_cache)}
    data = {"method_options": {"spd": {"n_calibration": 4}, "spd_random": {"n_calibration": 4}}}
    _plain, axes = split_sets(["train.lr=1e-4,1e-3,0.0001", "method_options.spd.rank_fraction=0.25,5e-1"])
    assert axes["train.lr"] == ["1e-4", "1e-3", 0.0001]  # as YAML reads them
    sweep = plan_sweep(data, flags, SweepSpec(axes), "lr")
    expected = {"train.lr": [0.0001, 0.001], "method_options.spd.rank_fraction": [0.25, 0.5]}
    assert sweep.spec.axes == expected
    assert all(isinstance(v, float) for values in sweep.spec.axes.values() for v in values)
    assert [s.label for s in sweep.settings] == ["train.lr=0.0001,spd.rank_fraction=0.25",
                                                 "train.lr=0.0001,spd.rank_fraction=0.5",
                                                 "train.lr=0.001,spd.rank_fraction=0.25",
                                                 "train.lr=0.001,spd.rank_fraction=0.5"]
    assert [s.config.train.lr for s in sweep.settings] == [0.0001, 0.0001, 0.001, 0.001]
    assert manifest(sweep, None)["values"] == expected
    with pytest.raises(UserError, match="train.lr: expected a number"):
        plan_sweep(data, flags, SweepSpec({"train.lr": ["1e-4", "fast"]}), "lr")
