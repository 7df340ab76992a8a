"""Score stored outputs again, through the same loaders and scorers as ``spd-bench run``.

Scoring is its own step: completions written by any system (another harness, an API, an
earlier run) are scored exactly like a model run, so numbers are comparable. The samples file
is JSONL: ``{"task_id", "completion"}`` per line for code tasks (several lines per task give
pass@k), ``{"doc_id" | "task_id", "response"}`` for the others, where ``doc_id`` is the item's
index in the task's item list (the ``doc_id`` that ``run`` writes to its samples files) and
``task_id`` the item's id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError


def read_samples(path: Path, code: bool) -> list[tuple[int, str | int, str]]:
    """(line number, item key, text) per line; ``key`` is an item id (str) or a doc_id (int)."""
    if not path.is_file():
        raise UserError(f"samples file {path} does not exist; pass --samples FILE.jsonl")
    text_field = "completion" if code else "response"
    keys = ("task_id",) if code else ("doc_id", "task_id")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"samples file {path} is not UTF-8 text (byte {exc.start}); write it as UTF-8 JSON lines") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object like {{\"{keys[0]}\": ..., \"{text_field}\": ...}}")
        if "task_id" in row:
            key: str | int = str(row["task_id"])
        elif "doc_id" in keys and "doc_id" in row:
            key = row["doc_id"]
            if isinstance(key, bool) or not isinstance(key, int):
                raise UserError(f"{where}: doc_id must be an integer index, got {key!r}")
        else:
            raise UserError(f"{where}: no {' or '.join(keys)}; each line names its item")
        text = row.get(text_field)
        if not code and isinstance(text, int) and not isinstance(text, bool):
            text = str(text)  # a multiple-choice answer given as the option index, as `run` records it
        if not isinstance(text, str):
            raise UserError(f"{where}: no {text_field!r} string; code tasks need 'completion', others 'response'")
        rows.append((number, key, text))
    if not rows:
        raise UserError(f"samples file {path} holds no lines")
    return rows


def collect_responses(rows: list[tuple[int, str | int, str]], items: list[dict[str, Any]], path: Path,
                      code: bool, all_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Item id -> responses; every item needs one (code: one or more), unknown items are errors.

    ``all_ids`` are the whole benchmark's ids when ``items`` is a ``--limit`` prefix: lines for
    items past the prefix are skipped, lines naming no item of the benchmark are still errors.
    """
    ids = [str(item["id"]) for item in items]
    every = all_ids if all_ids is not None else ids
    known = set(ids)
    responses: dict[str, list[str]] = {}
    for number, key, text in rows:
        item_id = every[key] if isinstance(key, int) and 0 <= key < len(every) else key
        if item_id not in known:
            if item_id in set(every):
                continue  # an item outside the --limit subset
            what = f"doc_id {key} is outside 0..{len(every) - 1}" if isinstance(key, int) else f"task_id {key!r} is not an item"
            raise UserError(f"{path}:{number}: {what} of this task; check the task name and --data")
        if item_id in responses and not code:
            raise UserError(f"{path}:{number}: a second response for item {item_id!r}; give one per item")
        responses.setdefault(item_id, []).append(text)
    missing = [item_id for item_id in ids if item_id not in responses]
    if missing:
        raise UserError(
            f"{path}: no response for {len(missing)} of {len(ids)} items (e.g. {missing[0]!r});"
            " cover every item, or score a prefix with --limit N"
        )
    return responses


def score_samples_file(task: str, samples_path: Path, *, cache_dir: Path, limit: int | None,
                       data: dict[str, str], allow_code_execution: bool) -> dict[str, float]:
    """Metrics of stored outputs for ``task`` (e.g. ``pass@1``, ``exact_match/flexible-extract``)."""
    from spd_bench.scoring import ScoreSettings, get_scorer
    from spd_bench.tasks import DataContext, get_task, load_eval

    spec = get_task(task)
    code = spec.scorer == "evalplus"
    if code and not allow_code_execution:
        raise UserError(f"task {task} runs the stored code; pass --allow-code-execution (runs sandboxed)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: give a positive number of items, or leave it out to score every item")
    rows = read_samples(Path(samples_path), code)
    loaded = load_eval(spec, DataContext(cache_dir=Path(cache_dir), paths=dict(data)), None)
    all_ids = [str(item["id"]) for item in loaded.items]
    items = loaded.items if limit is None else loaded.items[:limit]
    responses = collect_responses(rows, items, Path(samples_path), code, all_ids=all_ids)
    settings = ScoreSettings(
        max_new_tokens=spec.max_new_tokens,
        allow_code_execution=allow_code_execution,
        work_dir=Path(cache_dir) / "scratch",
    )
    output = get_scorer(spec.scorer).score_responses(spec, items, responses, settings)
    return output.metrics
