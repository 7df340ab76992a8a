"""A damaged cache never yields a different record: each probe rebuilds to the undamaged result, or stops.

Runs the pipeline in this process on a tiny model and the arith plugin task (seconds per run):
one undamaged reference run, then one damaged copy of its cache per probe.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import backdate, run_arith
from spd_bench.errors import UserError

pytestmark = pytest.mark.slow

BASE, RAW, SPD = (f"records/tiny-qwen2/arith/{name}.json" for name in ("base", "raw_sd-seed1", "spd-seed1"))
# A large step, so that the adapter visibly changes the outputs and scoring without it would show.
SETTINGS = ("train.epochs=2", "train.lr=0.1", "method_options.spd.n_calibration=8")


def run(root: Path, cache: Path, model: str = "tiny-qwen2", methods: tuple[str, ...] = ("base", "raw_sd", "spd"),
        settings: tuple[str, ...] = SETTINGS, **store_options: Any) -> tuple[dict[str, dict], list[str]]:
    """Seed 1 on arith into ``root/results``, with this file's defaults (see helpers.run_arith)."""
    return run_arith(root, cache, model, methods, settings, **store_options)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """An undamaged run: its cache and its records."""
    root = tmp_path_factory.mktemp("reference")
    found, notices = run(root, root / "cache")
    assert not notices
    assert found[RAW]["samples"] != found[BASE]["samples"]  # the adapter matters to the outputs
    return root / "cache", found


def delete(path: Path) -> None:
    path.unlink()


def keep_first_quarter(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 4]))


def garbage(path: Path) -> None:
    path.write_text("{not json")


def flip_tail(path: Path) -> None:
    """Same size, other bytes (the end of a safetensors file is tensor data, so its header still parses)."""
    data = bytearray(path.read_bytes())
    data[-16:] = bytes(b ^ 0xFF for b in data[-16:])
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class Probe:
    record: str  # whose stage is damaged
    stage: str
    file: str
    damage: Callable[[Path], None]
    problem: str  # what the notice says about the file


# Recomputed after a damaged stage (--force), so that whatever it holds is read again.
LATER = {"prepare": ("sample", "curate", "train", "score"), "sample": ("curate", "train", "score"),
         "curate": ("train", "score"), "train": ("score",), "score": ()}
PROBES = {
    "adapter_config.json deleted": Probe(RAW, "train", "adapter_config.json", delete, "adapter_config.json is missing"),
    "samples truncated at a line boundary": Probe(RAW, "sample", "samples.jsonl", keep_first_quarter, "samples.jsonl changed size"),
    "garbage in a manifest": Probe(RAW, "curate", "manifest.json", garbage, "manifest.json is not valid JSON"),
    "garbage in a score file": Probe(RAW, "score", "score.json", flip_tail, "score.json changed content"),
    "garbage in adapter weights": Probe(RAW, "train", "adapter_model.safetensors", flip_tail, "adapter_model.safetensors changed content"),
    "corpus deleted": Probe(RAW, "curate", "corpus.jsonl", delete, "corpus.jsonl is missing"),
    "garbage in projectors": Probe(SPD, "prepare", "projectors.safetensors", flip_tail, "projectors.safetensors changed content"),
}


def damaged_copy(reference: tuple[Path, dict[str, dict]], tmp_path: Path, probe: Probe) -> tuple[Path, str]:
    """A copy of the reference cache with ``probe``'s damage done: (the cache, "stage/key")."""
    cache, found = reference
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    key = found[probe.record]["keys"][probe.stage]
    probe.damage(copy / probe.stage / key / probe.file)
    return copy, f"{probe.stage}/{key}"


@pytest.mark.parametrize("name", PROBES)
def test_a_damaged_stage_is_rebuilt_to_the_same_records(reference, tmp_path: Path, name: str):
    probe = PROBES[name]
    cache, where = damaged_copy(reference, tmp_path, probe)
    found, notices = run(tmp_path, cache, force=set(LATER[probe.stage]))
    assert found == reference[1]
    assert len(notices) == 1 and notices[0].startswith(f"stage {where}: {probe.problem}")
    assert notices[0].endswith("; rebuilding") and "\n" not in notices[0]


@pytest.mark.parametrize("name", PROBES)
def test_without_rebuild_a_damaged_stage_stops_the_run_with_one_line(reference, tmp_path: Path, name: str):
    probe = PROBES[name]
    cache, where = damaged_copy(reference, tmp_path, probe)
    with pytest.raises(UserError) as caught:
        run(tmp_path, cache, rebuild=False, force=set(LATER[probe.stage]))
    message = str(caught.value)
    assert message.startswith(f"stage {where}: {probe.problem}") and "\n" not in message
    assert "--no-rebuild" in message and str(cache / where) in message
    assert not (tmp_path / "results" / probe.record).exists()


def test_leftovers_of_a_killed_stage_go_and_the_records_stay(reference, tmp_path: Path):
    cache, found = reference
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    key = found[RAW]["keys"]["train"]
    leftover = copy / "train" / f".{key}.tmp-k1ll3d"
    shutil.copytree(copy / "train" / key, leftover)
    (leftover / "adapter_model.safetensors").write_bytes(b"half")
    backdate(leftover)  # left by a run killed before this process started
    again, notices = run(tmp_path, copy)
    assert again == found and not notices
    assert not leftover.exists()


def test_nothing_trained_is_recorded_as_such_and_scored_as_the_base_model(tmp_path: Path):
    """rft keeps no sample of a random model: the train stage says so in its manifest and holds no files."""
    settings = ("method_options.rft.k=1",)
    found, _ = run(tmp_path, tmp_path / "cache", model="tiny-llama", methods=("base", "rft"), settings=settings)
    base, rft = found["records/tiny-llama/arith/base.json"], found["records/tiny-llama/arith/rft-seed1.json"]
    manifest = json.loads((tmp_path / "cache" / "train" / rft["keys"]["train"] / "manifest.json").read_text())
    assert manifest["info"]["empty_corpus"] is True and manifest["files"] == {}
    assert rft["budget"]["n_examples"] == 0
    assert (rft["metrics"], rft["samples"]) == (base["metrics"], base["samples"])
    again, notices = run(tmp_path, tmp_path / "cache", model="tiny-llama", methods=("base", "rft"), settings=settings, force={"score"})
    assert again == found and not notices


def test_no_rebuild_on_the_command_line_stops_with_one_line(reference: tuple[Path, dict[str, dict]], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from spd_bench import cli

    cache = tmp_path / "cache"
    shutil.copytree(reference[0], cache)
    damaged = sorted(cache.glob("sample/*/samples.jsonl"))
    for samples in damaged:
        keep_first_quarter(samples)
    code = cli.main(["run", "--model", "tiny-qwen2", "--methods", "base,raw_sd", "--tasks", "arith", "--seeds", "1",
                     "--output", str(tmp_path / "results"), "--cache-dir", str(cache), "--no-rebuild", "--no-leaderboard",
                     *[arg for setting in SETTINGS[:2] for arg in ("--set", setting)]])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert any(f"sample/{samples.parent.name}" in lines[0] for samples in damaged) and "--no-rebuild" in lines[0]
