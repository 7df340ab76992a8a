"""Where records go: one file per (model, task, method, training source, seed), never one overwriting another."""

from __future__ import annotations

from pathlib import Path

from spd_bench.results import EvalSettings, ResultRecord, record_relpath


def _record(task: str, domain: str, source: str | None, seed: int | None, method: str = "spd") -> ResultRecord:
    settings = EvalSettings(prompt_format="plain", decoding={}, limit=None, data_layer="local", n_items=1, scorer="nll")
    return ResultRecord(model="org/model", method=method, training_source=source, task=task, domain=domain, seed=seed,
                        metrics={"acc": 1.0}, primary_metric="acc", higher_is_better=True, eval_settings=settings,
                        method_info={}, config={}, config_hash="x", provenance={})


def test_an_out_of_domain_task_scored_for_two_sources_keeps_two_records():
    """A task without a training source is out-of-domain for every source of the run (gsm8k and
    humaneval with math500): each source's fine-tuned model gets its own record of it."""
    paths = {record_relpath(_record("math500", "out", source, 1)) for source in ("gsm8k_train", "mbpp_train")}
    assert paths == {Path("records/org__model/math500/spd-gsm8k_train-seed1.json"),
                     Path("records/org__model/math500/spd-mbpp_train-seed1.json")}


def test_in_domain_and_base_records_keep_their_short_names():
    assert record_relpath(_record("gsm8k", "in", "gsm8k_train", 2)) == Path("records/org__model/gsm8k/spd-seed2.json")
    assert record_relpath(_record("math500", "out", None, None, method="base")) == Path("records/org__model/math500/base.json")
