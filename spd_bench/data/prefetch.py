"""Fill the cache on a machine with network, so runs elsewhere need none.

GPU nodes often reach neither the hub nor the package index. ``prefetch`` saves every hub split
a task and its training source use (``datasets.save_to_disk`` under ``<cache>/datasets/``),
downloads the offline mirrors, rebuilds BBH from the BIG-bench source archive when the hub
cannot give it, and then loads each task and source once the way ``run`` will, which also
prepares the EvalPlus problem files. For humaneval and mbpp it also downloads EvalPlus's own
HumanEval+/MBPP+ release into EvalPlus's cache folder (``evalplus_release``), which gives those
tasks their extra tests; copy that folder too (or point HUMANEVAL_OVERRIDE_PATH /
MBPP_OVERRIDE_PATH at the files). Copy the cache folder to the node and run there with
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

from spd_bench.data import evalplus_release, layers, mirrors, real
from spd_bench.errors import UserError
from spd_bench.hub import hub_reachable, offline_mode
from spd_bench.store import publish_folder

REAL_EVAL = "spd_bench.data.real:load_eval_set"
REAL_SOURCE = "spd_bench.data.real:load_training_source"


def save_hub_split(split: layers.HubSplit, cache_dir: Path) -> tuple[bool, str]:
    """Save one hub split where the hub layer looks first: (whether it is cached now, what happened)."""
    folder = split.folder(cache_dir)
    if (folder / "dataset_info.json").is_file():
        return True, f"{split.label()}: already cached"
    if not offline_mode() and not hub_reachable():
        return False, f"{split.label()}: hub unreachable"
    from datasets import load_dataset

    try:
        data = load_dataset(split.path, split.name, split=split.split)
    except Exception as exc:  # datasets raises many kinds for missing, gated or unreachable data
        return False, f"{split.label()}: not loaded ({(str(exc).splitlines() or [type(exc).__name__])[0]})"
    publish_folder(folder, lambda tmp: data.save_to_disk(str(tmp)))
    return True, f"{split.label()}: saved ({len(data)} rows)"


def rebuild_bbh(cache_dir: Path) -> str:
    """BBH from the BIG-bench source archive (358 MB download), written as the bbh mirror file."""
    target = real.bbh_mirror_file(cache_dir)
    if target.is_file():
        return f"BBH rebuilt from BIG-bench: already cached ({target})"
    archive = mirrors.fetch_sdist(*mirrors.BIGBENCH, cache_dir, "pass --data bbh=PATH instead")
    rows = mirrors.bbh_from_bigbench(archive)
    from spd_bench.store import atomic_write_text

    atomic_write_text(target, "".join(json.dumps(row) + "\n" for row in rows))
    return f"BBH rebuilt from BIG-bench {mirrors.BIGBENCH[1]}: {len(rows)} examples in {target}"


def _fetch(
    bench: real.Benchmark, splits: tuple[layers.HubSplit, ...], mirror: real.MirrorFn | None, cache_dir: Path
) -> list[str]:
    saved = [save_hub_split(split, cache_dir) for split in splits]
    failed = [note for ok, note in saved if not ok]
    notes = [note for ok, note in saved if ok]
    if failed:
        more = f" (and {len(failed) - 1} more splits)" if len(failed) > 1 else ""
        notes.append(failed[0] + more)
    if bench.name == "bbh":
        if failed:
            try:
                notes.append(rebuild_bbh(cache_dir))
            except UserError as exc:
                notes.append(f"BBH not rebuilt from BIG-bench: {exc}")
        return notes
    if bench.code and splits is bench.eval_hub:
        notes.append(evalplus_release.download(bench.code))
    if mirror is not None:
        try:
            mirror(cache_dir, "")
            notes.append(f"offline mirror of {bench.name}: ready")
        except UserError as exc:
            notes.append(f"offline mirror of {bench.name}: {exc}")
    return notes


def prefetch(tasks: list[str], cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Per task and training source: what was fetched, then the layer and size a run will get."""
    from spd_bench.tasks import DataContext, expand_tasks, get_source, get_task, load_eval, load_source

    cache_dir = Path(cache_dir)
    ctx = DataContext(cache_dir=cache_dir)
    report: dict[str, dict[str, Any]] = {}
    for name in expand_tasks(tasks):
        task = get_task(name)
        if task.data != REAL_EVAL:
            report[name] = {"fetched": [], "status": f"nothing to fetch (loader {task.data})"}
            continue
        bench = real.benchmark(task.options.get("benchmark", name))
        notes = _fetch(bench, bench.eval_hub, bench.mirror_eval, cache_dir)
        report[name] = _loaded(notes, functools.partial(load_eval, task, ctx))
        source_name = task.training_source
        if source_name and source_name not in report:
            source = get_source(source_name)
            if source.loader == REAL_SOURCE:
                bench = real.benchmark(source.options.get("benchmark", source_name))
                notes = _fetch(bench, bench.train_hub, bench.mirror_train or bench.mirror_eval, cache_dir)
                report[source_name] = _loaded(notes, functools.partial(load_source, source, ctx))
    return report


def _loaded(notes: list[str], load: Callable[[], Any]) -> dict[str, Any]:
    """Load once as a run would: the layer and size a run will get, or why it cannot."""
    try:
        loaded = load()
    except UserError as exc:
        return {"fetched": notes, "status": f"not available: {exc}"}
    if hasattr(loaded, "items"):
        size = f"{len(loaded.items)} items"
    else:
        size = f"{len(loaded.train)} training prompts + {len(loaded.calibration)} calibration examples"
    return {"fetched": notes, "status": f"ready: {loaded.layer}, {size}", "layer": loaded.layer}
