"""Training-corpus and subspace diagnostics: exact numbers on constructed corpora, the projection's
limits on a tiny model, and a small run whose records, leaderboard and report carry them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import ensure_arith_plugin
from spd_bench.cell_report import CellQuery, parse_cell
from spd_bench.cli import main
from spd_bench.config import RunConfig, make_config, parse_set
from spd_bench.engine.pipeline import Pipeline
from spd_bench.engine.plan import make_plan
from spd_bench.errors import UserError
from spd_bench.diagnostics.corpus import (
    LABELS_NOTE,
    NEEDS_EXECUTION,
    corpus_diagnostics,
    correct_share,
    distinct_n,
    identical_share,
    labels_note,
)
from spd_bench.diagnostics.subspace import PROMPT_LIMIT, subspace_diagnostics
from spd_bench.leaderboard import build_leaderboard
from spd_bench.leaderboard.diagnostics import DIAGNOSTICS_CSV, SECTION_TITLE
from spd_bench.results import load_record, record_from_dict
from spd_bench.spd.extract import Projectors, random_projectors
from spd_bench.store import ArtifactStore
from tiny_models import KV_WIDTH, VOCAB, tiny_model


def _row(prompt_id: str, completion: str, index: int = 0) -> dict:
    return {"prompt_id": prompt_id, "prompt": f"Q {prompt_id}", "completion": completion, "sample_index": index}


MATH_ITEMS = {"a": {"id": "a", "label": "16"}, "b": {"id": "b", "label": "1,200"}, "c": {"id": "c", "label": None}}


def test_correct_share_reads_answers_as_rft_does():
    rows = [
        _row("a", " 8 + 8 = 16. #### 16"),  # correct after the marker
        _row("a", " 8 + 8 = 17"),  # wrong last number
        _row("b", " so 1200 apples"),  # correct: "1,200" and "1200" are one number
        _row("b", " #### 12 then 1200"),  # wrong: the first number after the marker counts
        _row("c", " 5"),  # unlabelled: not judged
    ]
    assert correct_share(rows, MATH_ITEMS, "math") == {"correct_share": 0.5, "n_judged": 4}


def test_correct_share_for_multiple_choice_and_the_kinds_it_cannot_judge():
    items = {"q": {"id": "q", "label": "", "choices": ["12", "26", "30"], "gold": 1}}
    rows = [_row("q", " B"), _row("q", " The answer is (C)"), _row("q", " 26"), _row("q", " none")]
    assert correct_share(rows, items, "multiple_choice") == {"correct_share": 0.5, "n_judged": 4}
    assert correct_share(rows, items, "code")["correct_share"] == NEEDS_EXECUTION
    assert correct_share(rows, items, "nll")["correct_share"].startswith("not computed")


def test_distinct_n_counts_unique_ngrams_over_the_corpus():
    corpus = [[1, 2, 3], [1, 2, 4], [5]]
    assert distinct_n(corpus, 1) == 5 / 7  # unigrams 1 2 3 1 2 4 5: five distinct
    assert distinct_n(corpus, 2) == 3 / 4  # bigrams (1,2) (2,3) (1,2) (2,4)
    assert distinct_n([[1], []], 2) is None


def test_identical_share_pairs_prompt_and_sample_index():
    mine = [_row("a", "x", 0), _row("a", "y", 1), _row("b", "z", 0), _row("c", "w", 0)]
    theirs = [_row("a", "x", 0), _row("a", "x", 1), _row("b", "z", 0)]  # no c: that pair is left out
    assert identical_share(mine, theirs) == 2 / 3
    assert identical_share(mine, None) is None
    assert identical_share(mine, [_row("d", "x")]) is None


def test_corpus_diagnostics_empty_truncated_and_length():
    rows = [_row("a", " 16"), _row("a", "   "), _row("b", " one two three four"), _row("b", " 1200 end")]
    result = corpus_diagnostics(rows, MATH_ITEMS, "math", lambda text: [len(w) for w in text.split()], 4,
                                reference=[_row("a", " 16"), _row("b", " 1200 end")])
    assert result["empty_share"] == 1 / 4
    assert result["truncated_share"] == 1 / 4  # only the four-token completion reached max_new_tokens
    assert result["mean_tokens"] == (1 + 0 + 4 + 2) / 4
    assert result["correct_share"] == 2 / 4
    assert result["identical_to_raw_sd"] == 1 / 2  # (a, 0) equal to raw_sd's, (b, 0) not
    assert labels_note(None) == LABELS_NOTE and "labels" in labels_note("labels")


class _IdTokenizer:
    """Characters to ids in 3..VOCAB-1: enough for the tiny models, no files."""

    def __call__(self, text: str, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([[3 + ord(ch) % (VOCAB - 3) for ch in text]])}


PROMPTS = ["Q: 3 + 4 =", "Q: 12 + 9 = ?", "what is seven plus one"]


def test_full_rank_projection_keeps_everything_and_a_random_low_rank_one_does_not():
    model = tiny_model("qwen2")
    eye = torch.eye(KV_WIDTH, dtype=torch.float64)
    identity = Projectors({layer: {"k": eye, "v": eye} for layer in (0, 1)},
                          ranks={layer: {"k": KV_WIDTH, "v": KV_WIDTH} for layer in (0, 1)},
                          dims={layer: {"k": KV_WIDTH, "v": KV_WIDTH} for layer in (0, 1)})
    full = subspace_diagnostics(model, _IdTokenizer(), identity, PROMPTS)
    assert abs(full["kl_unprojected_to_projected"]) < 1e-6
    assert full["kept_energy"] == pytest.approx({"k": 1.0, "v": 1.0}, abs=1e-9)
    assert full["n_prompts"] == 3 and full["prompt_limit"] == PROMPT_LIMIT
    assert full["n_tokens"] == sum(len(p) for p in PROMPTS)

    low = subspace_diagnostics(model, _IdTokenizer(), random_projectors(model, [0, 1], rank=4, seed=0), PROMPTS)
    assert low["kl_unprojected_to_projected"] > 1e-4
    assert all(0 < low["kept_energy"][kind] < 1 for kind in ("k", "v"))
    assert set(low["kept_energy_by_layer"]) == {"0", "1"}
    assert low["gradient_energy"] is None  # random projectors saw no gradients
    # the hooks are gone: the model computes what it did before
    ids = _IdTokenizer()(PROMPTS[0])["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, tiny_model("qwen2")(input_ids=ids).logits)


def test_records_written_before_diagnostics_still_load(tmp_path: Path):
    fixture = next((Path(__file__).parent / "fixtures" / "records").rglob("*.json"))
    data = json.loads(fixture.read_text())
    data.pop("diagnostics", None)
    assert record_from_dict(data, str(fixture)).diagnostics == {}


def test_a_cell_is_named_one_way_or_the_other():
    assert parse_cell("spd/gsm8k_train/seed3") == CellQuery("spd", "gsm8k_train", 3)
    assert parse_cell(None, "spd", seed=2, model="m") == CellQuery("spd", None, 2, "m")
    assert parse_cell("base") == CellQuery("base")
    for bad in (lambda: parse_cell("spd"), lambda: parse_cell("spd/x/seed1", "spd"), lambda: parse_cell(None)):
        with pytest.raises(UserError):
            bad()


@pytest.fixture(scope="module")
def diagnosed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunConfig]:
    """Seed 1 of base, raw_sd and spd on the arith plugin task, in this process."""
    ensure_arith_plugin()
    root = tmp_path_factory.mktemp("diagnosed")
    flags = {"model": "tiny-qwen2", "methods": ["base", "raw_sd", "spd"], "tasks": ["arith"], "seeds": [1],
             "output_dir": str(root / "results"), "cache_dir": str(root / "cache")}
    config = make_config(parse_set(["method_options.spd.n_calibration=4", "train.epochs=1"]), flags)
    Pipeline(config, make_plan(config), ArtifactStore(root / "cache")).run()
    return root / "results", config


@pytest.mark.slow
def test_a_run_records_diagnostics_and_the_leaderboard_shows_them(diagnosed_run: tuple[Path, RunConfig], tmp_path: Path):
    results, _ = diagnosed_run
    arith = results / "records" / "tiny-qwen2" / "arith"
    spd, raw, base = (load_record(arith / name) for name in ("spd-seed1.json", "raw_sd-seed1.json", "base.json"))
    assert base.diagnostics == {}
    assert raw.diagnostics["corpus"]["identical_to_raw_sd"] == 1.0
    assert raw.diagnostics["subspace"] is None  # raw_sd has no projectors
    corpus = spd.diagnostics["corpus"]
    assert corpus["n_completions"] == 16 and corpus["n_judged"] == 16 and corpus["labels_note"] == LABELS_NOTE
    assert 0 <= corpus["identical_to_raw_sd"] <= 1 and 0 < corpus["distinct_1"] <= 1
    subspace = spd.diagnostics["subspace"]
    assert subspace["n_prompts"] == 16 and subspace["kl_unprojected_to_projected"] > 0
    assert 0 < subspace["kept_energy"]["k"] < 1 and 0 < subspace["gradient_energy"] <= 1

    board = build_leaderboard(results, tmp_path, ["md", "csv", "tex", "html"])
    assert [(t.model, t.source, [r.method for r in t.rows]) for t in board.diagnostics] == [
        ("tiny-qwen2", "arith_train", ["raw_sd", "spd"])]
    for name in ("leaderboard.md", "leaderboard.html", "leaderboard.tex"):
        assert SECTION_TITLE in (tmp_path / name).read_text()
    table = (tmp_path / DIAGNOSTICS_CSV).read_text()
    assert "tiny-qwen2,arith_train,raw_sd,same as raw_sd %,100.0," in table


@pytest.mark.slow
def test_a_second_run_serves_the_diagnostics_from_the_cache_without_a_model(diagnosed_run: tuple[Path, RunConfig]):
    _, config = diagnosed_run
    pipeline = Pipeline(config, make_plan(config), ArtifactStore(Path(config.cache_dir)))
    pipeline.run()
    assert {"diagnose_corpus", "diagnose_subspace"} <= {entry["stage"] for entry in pipeline.stage_log}
    assert all(entry["cached"] for entry in pipeline.stage_log)
    assert pipeline._backend is None and pipeline._training_model is None


@pytest.mark.slow
def test_report_prints_a_cell_and_refuses_an_unknown_one(diagnosed_run: tuple[Path, RunConfig],
                                                         capsys: pytest.CaptureFixture[str]):
    results, _ = diagnosed_run
    before = sorted(results.rglob("*"))
    assert main(["report", "spd/arith_train/seed1", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cell spd/arith_train/seed1 on tiny-qwen2")
    arith = results / "records" / "tiny-qwen2" / "arith"
    spd, raw, base = (load_record(arith / name) for name in ("spd-seed1.json", "raw_sd-seed1.json", "base.json"))
    metric = spd.primary_metric
    mine, theirs, untrained = spd.metrics[metric], raw.metrics[metric], base.metrics[metric]
    assert f"| base {untrained:.4g} ({mine - untrained:+.4g}) | raw_sd seed 1 {theirs:.4g} ({mine - theirs:+.4g})" in out
    assert f"loss first {spd.method_info['training']['loss_first']:.4g}" in out
    assert "identical_to_raw_sd:" in out and "kl_unprojected_to_projected:" in out
    assert main(["report", "--method", "raw_sd", "--results", str(results)]) == 0
    assert capsys.readouterr().out.startswith("cell raw_sd/arith_train/seed1")

    assert main(["report", "spd/arith_train/seed7", "--results", str(results)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error = " ".join(captured.err.split())
    assert "no cell spd/arith_train/seed7; cells: base, raw_sd/arith_train/seed1, spd/arith_train/seed1" in error
    assert sorted(results.rglob("*")) == before
