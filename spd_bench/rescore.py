"""Score stored outputs again, through the same loaders and scorers as ``spd-bench run``.

Scoring is its own step: completions written by any system (another harness, an API, an
earlier run) are scored exactly like a model run, so numbers are comparable. The samples file
is JSONL: ``{"task_id", "completion" | "solution"}`` per line for code tasks, as EvalPlus reads
them (a ``solution`` is the whole program and wins over a ``completion``, which continues the
prompt; several lines per task give pass@k), ``{"doc_id" | "task_id", "response"}`` for the others, where ``doc_id`` is the item's
index in the task's item list (the ``doc_id`` that ``run`` writes to its samples files) and
``task_id`` the item's id. An lm-eval ``--log_samples`` file (doc_id, doc, resps on every line)
is replayed into lm-eval, whose filters and metrics score its raw responses again.
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
        if code and isinstance(row.get("solution"), str):
            from spd_bench.scoring.evalplus_scorer import Solution

            text = Solution(row["solution"])  # EvalPlus's whole program: tested as written
        if not code and isinstance(text, int) and not isinstance(text, bool):
            text = str(text)  # a multiple-choice answer given as the option index, as `run` records it
        if not isinstance(text, str):
            raise UserError(f"{where}: no {text_field!r} string; code tasks need 'completion' or 'solution',"
                            " others 'response'")
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
                       data: dict[str, str], allow_code_execution: bool,
                       include_path: list[str] | None = None) -> dict[str, float]:
    """Metrics of stored outputs for ``task`` (e.g. ``pass@1``, ``exact_match/flexible-extract``)."""
    from spd_bench.scoring import ScoreSettings, get_scorer
    from spd_bench.tasks import DataContext, get_task, load_eval

    spec = get_task(task)
    lm_eval_rows = read_lm_eval_samples(Path(samples_path))
    if lm_eval_rows is not None or spec.kind == "lm_eval":
        return _score_lm_eval_samples(spec, lm_eval_rows, Path(samples_path), cache_dir=Path(cache_dir), limit=limit,
                                      data=data, include_path=include_path or [])
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


def read_lm_eval_samples(path: Path) -> list[dict[str, Any]] | None:
    """The rows of an lm-eval ``--log_samples`` file (doc_id, doc and resps on every line), or None
    when the file is in spd-bench's own samples format."""
    if not path.is_file():
        raise UserError(f"samples file {path} does not exist; pass --samples FILE.jsonl")
    from spd_bench.scoring.lmeval_tasks import is_sample_row

    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        first = json.loads(lines[0]) if lines else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # read_samples says what is wrong with the file
    if not is_sample_row(first):
        return None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); an lm-eval samples file has one object per line") from exc
        if not is_sample_row(row):
            raise UserError(f"{path}:{number}: not an lm-eval sample (doc_id, doc and resps); the first line is one")
        rows.append(row)
    return rows


def _score_lm_eval_samples(spec: Any, rows: list[dict[str, Any]] | None, path: Path, *, cache_dir: Path,
                           limit: int | None, data: dict[str, str], include_path: list[str]) -> dict[str, float]:
    """The responses of an lm-eval samples file scored again by lm-eval (filters and metrics), on
    lm-eval's own task or a catalogue task; without --limit, the documents the file covers."""
    import dataclasses

    from spd_bench.scoring import ScoreSettings, get_scorer
    from spd_bench.scoring.lmeval_tasks import SampleFileLM, check_include_paths
    from spd_bench.tasks import DataContext, load_eval

    if rows is None:
        raise UserError(f"task {spec.name} is lm-eval's own: --samples takes an lm-eval samples file"
                        " (lm_eval --log_samples, or the .lm_eval_samples_*.jsonl beside a record)")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: give a positive number of documents, or leave it out")
    covered = limit if limit is not None else max(int(row["doc_id"]) for row in rows) + 1
    lm = SampleFileLM(rows, str(path))
    settings = ScoreSettings(max_new_tokens=spec.max_new_tokens, work_dir=Path(cache_dir) / "scratch")
    if spec.kind == "lm_eval":
        check_include_paths(include_path)
        spec = dataclasses.replace(spec, options={**spec.options, "include_path": include_path, "limit": covered})
        return get_scorer(spec.scorer).score_lm(lm, spec, settings).metrics
    if spec.scorer not in ("lmeval_generate", "lmeval_mc"):
        raise UserError(f"task {spec.name} is not scored by lm-eval; give its samples as spd-bench JSONL")
    ctx = DataContext(cache_dir=Path(cache_dir), paths=dict(data))
    items = load_eval(spec, ctx, covered).items
    if spec.num_fewshot:  # the documents as the run scored them: its few-shot context before each prompt
        from spd_bench.tasks import add_fewshot, get_source, load_source

        items = add_fewshot(spec, items, load_source(get_source(spec.fewshot_source), ctx).train, spec.num_fewshot)
    return get_scorer(spec.scorer).score_lm(lm, spec, items, settings).metrics
