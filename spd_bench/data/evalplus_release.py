"""EvalPlus's own datasets, HumanEval+ and MBPP+: the base tests and EvalPlus's extra ("plus") tests.

EvalPlus finds a release where ``evalplus.data.get_human_eval_plus`` / ``get_mbpp_plus`` do: the
file named by ``HUMANEVAL_OVERRIDE_PATH`` / ``MBPP_OVERRIDE_PATH``, else its versioned file in
EvalPlus's cache folder, which ``download`` fills (``spd-bench prefetch``) through EvalPlus's own
``make_cache``. Loading never downloads, so an offline run falls back to the base tests at once
and says why. Problems are read as the release stores them: MBPP+'s inputs stay serialized,
and the scorer converts them by problem as EvalPlus does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError


@dataclass(frozen=True)
class Release:
    label: str  # EvalPlus's name for the dataset with its extra tests
    name: str  # the release's file name stem
    override_env: str


RELEASES = {
    "humaneval": Release("HumanEval+", "HumanEvalPlus", "HUMANEVAL_OVERRIDE_PATH"),
    "mbpp": Release("MBPP+", "MbppPlus", "MBPP_OVERRIDE_PATH"),
}


def version(code: str) -> str:
    """The release version this EvalPlus reads by default."""
    if code == "mbpp":
        from evalplus.data.mbpp import MBPP_PLUS_VERSION

        return MBPP_PLUS_VERSION
    from evalplus.data.humaneval import HUMANEVAL_PLUS_VERSION

    return HUMANEVAL_PLUS_VERSION


def _cached(code: str) -> tuple[str, Path]:
    """(download address, file in EvalPlus's cache folder) of the release, as EvalPlus names them."""
    from evalplus.data.utils import get_dataset_metadata

    url, path = get_dataset_metadata(RELEASES[code].name, version(code), False, False)
    return url, Path(path)


def locate(code: str) -> tuple[Path | None, str]:
    """The release file to read, or None; and where it is, or why it is not reachable."""
    release = RELEASES[code]
    override = os.environ.get(release.override_env)
    if override:
        if not Path(override).is_file():
            raise UserError(f"{release.override_env}={override} is not a file; point it at a {release.label} JSONL file")
        return Path(override), f"{release.label} from {release.override_env}={override}"
    _, path = _cached(code)
    if path.is_file():
        return path, f"{release.label} {version(code)} from EvalPlus's cache ({path})"
    return None, (f"not in EvalPlus's cache ({path}) and {release.override_env} unset;"
                  f" run `spd-bench prefetch --tasks {code}` on a machine with network")


def load(code: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The release's problems (every field EvalPlus checks present), or None; and the note of ``locate``."""
    from evalplus.data.utils import stream_jsonl

    path, note = locate(code)
    if path is None:
        return None, note
    problems = list(stream_jsonl(str(path)))
    needed = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input")
    for problem in problems:
        lacking = [key for key in needed if key not in problem]
        if lacking:
            raise UserError(f"{path}: {RELEASES[code].label} problem {problem.get('task_id', '?')} lacks"
                            f" {', '.join(lacking)}; give EvalPlus's release file")
    if not problems:
        raise UserError(f"{path}: no {RELEASES[code].label} problems; give EvalPlus's release file")
    return problems, note


def download(code: str) -> str:
    """Fill EvalPlus's cache with the release (network), unless an override or the cache has it."""
    path, note = locate(code)
    if path is not None:
        return f"{note}: ready"
    from evalplus.data.utils import make_cache

    url, target = _cached(code)
    try:
        make_cache(url, str(target))
    except Exception as exc:  # urllib/wget raise many kinds for an unreachable address
        return f"{RELEASES[code].label} not downloaded from {url} ({type(exc).__name__}: {exc})"
    return f"{RELEASES[code].label} {version(code)} saved in EvalPlus's cache ({target})"
