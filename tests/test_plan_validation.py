"""Every value a user can set is checked when the run is planned: one line, exit 2, before any
data or model is loaded. Called in-process through the CLI's main function (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spd_bench import cli

BASE = ["run", "--model", "tiny-llama", "--methods", "base,raw_sd,spd", "--tasks", "humaneval", "--limit", "2",
        "--n-train", "4", "--seeds", "1", "--allow-code-execution"]


@pytest.fixture
def no_model_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a run gets as far as loading data or weights."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("model or data work started before the bad value was refused")

    monkeypatch.setattr("spd_bench.models.load_model", forbidden)
    monkeypatch.setattr("spd_bench.engine.pipeline.Pipeline.__init__", forbidden)
    monkeypatch.setattr("spd_bench.tasks.load_eval", forbidden)


def main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = cli.main(list(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines


def assert_one_line(code: int, lines: list[str], *needles: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines


BAD_VALUES = [
    ("train.lr=-1", ["train.lr", "-1", "above 0"]),
    ("train.lr=.inf", ["train.lr", "inf", "finite"]),
    ("train.lr=nan", ["train.lr", "nan", "finite"]),
    ("train.epochs=0", ["train.epochs", "0", ">= 1"]),
    ("train.batch_size=0", ["train.batch_size", ">= 1"]),
    ("train.lora_r=0", ["train.lora_r", ">= 1"]),
    ("train.lora_alpha=0", ["train.lora_alpha", "above 0"]),
    ("train.lora_dropout=2", ["train.lora_dropout", "[0, 1)"]),
    ("train.weight_decay=-1", ["train.weight_decay", "0 or more"]),
    ("train.warmup_ratio=5", ["train.warmup_ratio", "[0, 1]"]),
    ("train.max_length=0", ["train.max_length"]),
    ("train.schedule=linearish", ["train.schedule", "cosine"]),
    ("train.target_modules=nosuch_proj", ["train.target_modules", "nosuch_proj", "q_proj"]),
    ("device=tpu", ["device", "tpu", "cuda"]),
    ("dtype=int3", ["dtype", "int3", "bfloat16"]),
    ("gen_batch_size=0", ["gen_batch_size", ">= 1"]),
    ("eval_batch_size=0", ["eval_batch_size", ">= 1"]),
    ("prompt_format=markdown", ["prompt_format", "markdown", "auto"]),
    ("decoding.temperature=-1", ["decoding.temperature", "-1", "0 (greedy)"]),
    ("decoding.top_p=2", ["decoding.top_p", "(0, 1]"]),
    ("decoding.top_p=0", ["decoding.top_p", "(0, 1]"]),
    ("decoding.top_k=-3", ["decoding.top_k", "-3"]),
    ("decoding.max_new_tokens=0", ["decoding.max_new_tokens", ">= 1"]),
    ("score.timeout_s=0", ["score.timeout_s", "above 0"]),
    ("score.memory_mb=8", ["score.memory_mb", ">= 64"]),
    ("score.n_samples=0", ["score.n_samples", ">= 1"]),
    ("score.n_samples=5", ["score.n_samples", "evaluated greedily"]),
    ("method_options.spd.rank_fraction=2", ["method_options.spd.rank_fraction", "(0, 1]"]),
    ("method_options.spd.rank_fraction=0", ["method_options.spd.rank_fraction", "(0, 1]"]),
    ("method_options.spd.rank=0", ["method_options.spd.rank", ">= 1"]),
    ("method_options.spd.rank=1000", ["method_options.spd", "rank 1000", "d=32"]),
    ("method_options.spd.layers=99", ["method_options.spd.layers", "99", "0..1"]),
    ("method_options.spd.layers=middle", ["method_options.spd.layers", "middle", "last_mid"]),
    ("method_options.spd.n_calibration=0", ["method_options.spd.n_calibration", ">= 1"]),
    ("method_options.spd.project=q", ["method_options.spd.project", "both"]),
    ("method_options.spd.calibration_loss=mse", ["method_options.spd.calibration_loss", "aligned"]),
    ("method_options.spd.generation=jit", ["method_options.spd.generation", "fold"]),
    ("method_options.spd.loss_on=prompt", ["method_options.spd.loss_on", "completion"]),
]

TYPE_ERRORS = [
    ("train.lr=fast", ["train.lr", "expected a number"]),
    ("train.epochs=1.5", ["train.epochs", "expected an integer"]),
    ("train.target_modules={a: 1}", ["train.target_modules", "expected a list"]),
    ("decoding.top_k=all", ["decoding.top_k", "expected an integer"]),
    ("gen_batch_size=true", ["gen_batch_size", "expected an integer"]),
    ("eval_batch_size=some", ["eval_batch_size", "expected an integer"]),
    ("method_options.spd.rank=half", ["method_options.spd.rank", "expected an integer"]),
    ("method_options.spd.n_calibration=[1]", ["method_options.spd.n_calibration", "expected an integer"]),
]


@pytest.mark.parametrize(("assignment", "needles"), BAD_VALUES + TYPE_ERRORS, ids=[a for a, _ in BAD_VALUES + TYPE_ERRORS])
def test_a_bad_value_is_refused_at_plan_time(model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             no_model_work: None, assignment: str, needles: list[str]) -> None:
    code, lines = main(capsys, *BASE, "--cache-dir", str(model_cache), "--output", str(tmp_path / "out"),
                       "--set", assignment)
    assert_one_line(code, lines, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--limit", "0"], ["limit", ">= 1"]),
        (["--limit", "-5"], ["limit", "-5"]),
        (["--n-train", "0"], ["n_train", ">= 1"]),
        (["--seeds", "-1"], ["seeds", "-1"]),
        (["--tasks", ","], ["no tasks given", "--tasks"]),
        (["--methods", ","], ["no methods given", "--methods"]),
    ],
)
def test_a_bad_flag_is_refused_at_plan_time(model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            no_model_work: None, flags: list[str], needles: list[str]) -> None:
    code, lines = main(capsys, *BASE, "--cache-dir", str(model_cache), "--output", str(tmp_path / "out"), *flags)
    assert_one_line(code, lines, *needles)


def test_a_config_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_work: None) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes(b"model: tiny-llama\ntasks: [caf\xe9]\n")
    code, lines = main(capsys, "run", "--config", str(config))
    assert_one_line(code, lines, "not UTF-8", str(config))


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_a_cache_folder_that_cannot_hold_files(model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               no_model_work: None, where: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cache = {"file": a_file, "under-file": a_file / "cache", "proc": Path("/proc/spd-bench-cache")}[where]
    code, lines = main(capsys, "run", "--model", "tiny-llama", "--methods", "base", "--tasks", "gsm8k",
                       "--cache-dir", str(cache), "--output", str(tmp_path / "out"))
    assert_one_line(code, lines, "cache folder", "--cache-dir")
    assert not (tmp_path / "out").exists()


def test_two_layers_collapse_is_said_at_plan_time(model_cache: Path) -> None:
    from spd_bench.config import make_config
    from spd_bench.engine.plan import make_plan

    plan = make_plan(make_config({}, {"model": "tiny-llama", "methods": ["spd"], "tasks": ["gsm8k"],
                                      "cache_dir": str(model_cache), "output_dir": str(model_cache / "out")}))
    assert plan.model.n_layers == 2
    assert any("single layer 1" in note for note in plan.notes), plan.notes
    literal = make_plan(make_config({"method_options": {"spd": {"layers": "last_mid_1based"}}}, {
        "model": "tiny-llama", "methods": ["spd"], "tasks": ["gsm8k"], "cache_dir": str(model_cache),
        "output_dir": str(model_cache / "out")}))
    assert [note for note in literal.notes if not note.startswith("backend auto")] == []


def test_the_two_readings_of_the_papers_layers() -> None:
    from spd_bench.spd.kv_layout import resolve_layers

    assert resolve_layers("last_mid", 24) == [12, 23]  # Qwen2.5-0.5B, 0-based reading of floor(L/2)
    assert resolve_layers("last_mid_1based", 24) == [11, 23]  # the 1-based pair converted literally
    assert resolve_layers("last_mid", 4) == [2, 3] and resolve_layers("last_mid_1based", 4) == [1, 3]
    assert resolve_layers("last_mid", 2) == [1] and resolve_layers("last_mid_1based", 2) == [0, 1]


def test_score_settings_reach_the_scorer(tmp_path: Path) -> None:
    from spd_bench.config import make_config, parse_set
    from spd_bench.engine.pipeline import Pipeline
    from spd_bench.tasks import get_task

    config = make_config(parse_set(["score.timeout_s=42", "score.memory_mb=4096"]), {"model": "tiny-llama"})
    settings = Pipeline(config, plan=None, store=None).score_settings(get_task("humaneval"))  # type: ignore[arg-type]
    assert (settings.timeout_s, settings.memory_mb, settings.n_samples) == (42.0, 4096, 1)
