"""The run order that starts each inference engine once: base-model sampling and base scoring, then
each projected model's sampling, then (after training, with the engine closed) every adapter's
evaluation; the records do not depend on that order."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import TESTS
from helpers import run_arith
from spd_bench.registry import load_plugin

load_plugin(str(TESTS / "fixtures" / "recording_backend.py"))
recording_backend = sys.modules["spd_bench_plugin_recording_backend"]

SETTINGS = ("method_options.spd.n_calibration=8", "train.epochs=1")


def _runs(events: list[tuple[str, str]]) -> list[str]:
    """The handle kinds of consecutive requests, each run of equal kinds once, with closes kept."""
    runs: list[str] = []
    for event, kind in events:
        label = "close" if event == "close" else kind if event != "load" else ""
        if label and (not runs or runs[-1] != label):
            runs.append(label)
    return runs


def test_each_model_is_served_in_one_stretch_and_the_engine_closes_before_training(tmp_path: Path, model_cache: Path):
    recording_backend.EVENTS.clear()
    found, _ = run_arith(tmp_path / "a", model_cache, "tiny-llama", ("base", "raw_sd", "spd"),
                         (*SETTINGS, "backend=recording"))
    runs = _runs(recording_backend.EVENTS)
    assert runs == ["base", "projected", "close", "adapter"], recording_backend.EVENTS
    assert [event for event, _ in recording_backend.EVENTS].count("load") == 1
    # the same stages through the hf backend give the same records, outputs and all
    reference, _ = run_arith(tmp_path / "b", model_cache, "tiny-llama", ("base", "raw_sd", "spd"), SETTINGS)
    assert {name: (entry["metrics"], entry["samples"]) for name, entry in found.items()} == {
        name: (entry["metrics"], entry["samples"]) for name, entry in reference.items()}
