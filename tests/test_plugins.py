"""Methods that live outside spd_bench: found through an entry point of another distribution,
or loaded with ``--plugin file.py``; each lists and runs end to end with no change to spd_bench.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, REPO, spd_bench_cmd

EXAMPLE = REPO / "examples" / "my_method.py"
DIST = "spd-example-plugin"

PLUGIN_MODULE = '''
"""A method shipped by another distribution; spd-bench finds it through the entry point alone."""
from spd_bench.method import Method


class NonEmptySD(Method):
    name = "nonempty_sd"
    description = "Raw self-distillation minus empty completions (entry-point test plugin)."

    def curate(self, samples, ctx):
        return [s for s in samples if s.completion.strip()]
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """An installed-looking distribution: a module plus a dist-info whose entry_points.txt names it."""
    root = tmp_path_factory.mktemp("site")
    (root / "spd_example_plugin.py").write_text(PLUGIN_MODULE)
    info = root / "spd_example_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[spd_bench.methods]\nnonempty_sd = spd_example_plugin:NonEmptySD\n")
    return root


def bench(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "400"}
    return subprocess.run(spd_bench_cmd(*args), capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of a rich table printed on one line each: first cell -> the other cells."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_list_methods_shows_description_signal_and_source(site):
    result = bench(site, "--plugin", str(EXAMPLE), "list", "methods")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    expected = {
        "base": ("none", "built-in"), "raw_sd": ("none", "built-in"), "spd": ("none", "built-in"),
        "spd_random": ("none", "built-in"), "ssd": ("none", "baselines"), "rft": ("labels", "baselines"),
        "exec_filter": ("tests", "baselines"), "self_consistency": ("none", "baselines"),
        "shortest_of_k": ("none", "plugin"), "nonempty_sd": ("none", f"plugin ({DIST})"),
    }
    for name, (signal, source) in expected.items():
        assert name in rows, f"{name} missing from:\n{result.stdout}"
        assert rows[name][:2] == [signal, source], name
        assert rows[name][2], f"{name} has no description"
    assert rows["nonempty_sd"][2] == "Raw self-distillation minus empty completions (entry-point test plugin)."


def run_with(site: Path, cache: Path, out: Path, methods: str, plugins: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> dict:
    plugin_args = [arg for plugin in (str(ARITH_PLUGIN), *plugins) for arg in ("--plugin", plugin)]
    set_args = [arg for value in ("train.epochs=1", *sets) for arg in ("--set", value)]
    result = bench(site, *plugin_args, "--quiet", "run", "--model", "tiny-llama", "--methods", methods, "--tasks", "arith",
                   "--seeds", "1", "--cache-dir", str(cache), "--output", str(out), "--no-leaderboard", *set_args)
    assert result.returncode == 0, result.stderr[-3000:]
    method = methods.split(",")[-1]
    (path,) = (out / "records").rglob(f"{method}-seed1.json")
    return json.loads(path.read_text())


def stage_rows(cache: Path, record: dict, stage: str, name: str) -> list[dict]:
    path = cache / stage / record["provenance"]["stage_keys"][stage] / name
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_entry_point_method_runs_end_to_end(site, model_cache, tmp_path):
    record = run_with(site, model_cache, tmp_path / "out", "base,nonempty_sd")
    assert record["method_info"]["description"].startswith("Raw self-distillation minus empty")
    assert record["method_info"]["external_signal"] is None
    generated = stage_rows(model_cache, record, "sample", "samples.jsonl")
    nonempty = [row for row in generated if row["completion"].strip()]
    budget = record["method_info"]["budget"]
    assert (budget["n_generated"], budget["n_kept"], budget["n_examples"]) == (16, len(nonempty), len(nonempty))
    assert (tmp_path / "out" / "records" / "tiny-llama" / "arith" / "base.json").exists()


@pytest.mark.slow
def test_plugin_file_method_runs_end_to_end(site, model_cache, tmp_path):
    record = run_with(site, model_cache, tmp_path / "out", "base,shortest_of_k", plugins=(str(EXAMPLE),),
                      sets=("method_options.shortest_of_k.k=2",))
    assert record["method_info"]["options"] == {"k": 2}
    generated = stage_rows(model_cache, record, "sample", "samples.jsonl")
    assert len(generated) == 16 * 2
    shortest: dict[str, int] = {}
    for row in generated:
        if row["completion"].strip():
            shortest[row["prompt_id"]] = min(shortest.get(row["prompt_id"], 10**9), len(row["completion"]))
    kept = stage_rows(model_cache, record, "curate", "corpus.jsonl")
    assert {row["prompt_id"]: len(row["completion"]) for row in kept} == shortest
    assert len(kept) == len(shortest) == record["method_info"]["budget"]["n_examples"]


def test_documented_example_is_the_shipped_file_and_its_snippets_run():
    doc = (REPO / "docs" / "adding-a-method.md").read_text()
    example_block, test_block = re.findall(r"```python\n(.*?)```", doc, re.S)[:2]
    assert example_block.strip() in EXAMPLE.read_text()
    # run in a fresh interpreter: the example registers itself, which must not leak into this process
    script = f"exec(compile({example_block!r}, 'example', 'exec'))\nexec(compile({test_block!r}, 'test', 'exec'))\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
