"""Data layers: the user's own file, then the model hub, then offline mirrors.

Each split of a benchmark is looked up in that order, and the result says which layer served
it and what was tried, so a score never silently comes from different data than the user
thinks. The hub layer reads a copy that ``spd-bench prefetch`` saved in the cache first (GPU
nodes often have no network), and otherwise asks the hub only when it can answer quickly:
with HF_DATASETS_OFFLINE=1 or HF_HUB_OFFLINE=1 ``datasets`` fails at once, and without them a
short connection probe decides, because ``load_dataset`` retries an unreachable hub for over
half a minute. When a benchmark's official training split exists in no reachable layer, what
does exist is split by a hash of each item id into disjoint train / calibration / eval parts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError
from spd_bench.hub import hub_reachable, offline_mode

LOCAL, HUB, MIRROR = "local", "hub", "offline-mirror"


# ---- local files -----------------------------------------------------------------------------

def read_local(path: str | Path, name: str) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (a list, or {"data": [...]}), parquet file or ``save_to_disk`` folder."""
    file = Path(path).expanduser()
    flag = f"--data {name}={path}"
    if not file.exists():
        raise UserError(f"{flag}: no such file; pass a .jsonl, .json or .parquet file (or a save_to_disk folder)")
    if file.is_dir():
        return _read_saved_dataset(file, flag)
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{file}:{number}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
    elif suffix == ".json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        rows = data.get("data") if isinstance(data, dict) else data
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(file).to_pylist()
    else:
        raise UserError(f"{flag}: unknown file type {suffix or '(none)'}; use .jsonl, .json or .parquet")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"{flag}: expected a list of JSON objects (one per example)")
    if not rows:
        raise UserError(f"{flag}: the file holds no examples")
    return rows


def _read_saved_dataset(folder: Path, flag: str) -> list[dict[str, Any]]:
    from datasets import Dataset, load_from_disk

    try:
        data = load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"{flag}: not a datasets.save_to_disk folder ({exc})") from exc
    if not isinstance(data, Dataset):
        raise UserError(f"{flag}: the folder holds several splits ({', '.join(data)}); point at one split's folder")
    return data.to_list()


# ---- the hub ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class HubSplit:
    """One split of a hub dataset: ``load_dataset(path, name, split=split)``."""

    path: str
    name: str | None
    split: str

    def label(self) -> str:
        return f"{self.path}{':' + self.name if self.name else ''}/{self.split}"

    def folder(self, cache_dir: Path) -> Path:
        """Where prefetch saves this split (``datasets.save_to_disk``)."""
        return Path(cache_dir) / "datasets" / self.path.replace("/", "__") / (self.name or "default") / self.split


def load_hub(split: HubSplit, cache_dir: Path) -> tuple[list[dict[str, Any]] | None, str]:
    """Rows of a hub split and where they came from, or (None, why not)."""
    saved = split.folder(cache_dir)
    if (saved / "dataset_info.json").is_file():
        from datasets import load_from_disk

        return load_from_disk(str(saved)).to_list(), f"prefetched copy {saved}"
    if not offline_mode() and not hub_reachable():
        return None, "hub unreachable"
    from datasets import load_dataset

    try:
        data = load_dataset(split.path, split.name, split=split.split)
    except Exception as exc:  # datasets raises many kinds for missing, gated or unreachable data
        reason = "offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) and not in the datasets cache" if offline_mode() else str(exc)
        return None, f"{split.label()}: {reason.splitlines()[0] if reason else type(exc).__name__}"
    return data.to_list(), f"hub {split.label()}"


def load_hub_splits(splits: tuple[HubSplit, ...], cache_dir: Path) -> tuple[list[list[dict[str, Any]]] | None, str]:
    """Every split, or None with the first reason one failed (a partial set is never used)."""
    parts, sources = [], []
    for split in splits:
        rows, note = load_hub(split, cache_dir)
        if rows is None:
            return None, note
        parts.append(rows)
        sources.append(note)
    return parts, "; ".join(sources)


# ---- deterministic splits --------------------------------------------------------------------

def stable_unit(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``: the same on every machine and Python version."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


def hash_order(items: list[dict[str, Any]], salt: str) -> list[dict[str, Any]]:
    """Items sorted by a hash of their id: a fixed shuffle, so the first N are a fair sample."""
    return sorted(items, key=lambda item: (stable_unit(salt, "order", str(item["id"])), str(item["id"])))


def offline_part(item_id: str, salt: str, eval_fraction: float) -> str:
    """``eval`` or ``train`` for one item of a set that must stand in for both splits."""
    return "eval" if stable_unit(salt, "part", item_id) < eval_fraction else "train"


def split_calibration(
    items: list[dict[str, Any]], n_calibration: int, salt: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, calibration): ``n_calibration`` items chosen by hash, disjoint from the rest."""
    if len(items) <= n_calibration:
        raise UserError(
            f"{salt}: {len(items)} labelled examples cannot give {n_calibration} calibration examples"
            " plus training prompts; provide more data with --data"
        )
    chosen = {str(item["id"]) for item in hash_order(items, salt + "/calibration")[:n_calibration]}
    train = [item for item in items if str(item["id"]) not in chosen]
    calibration = [item for item in items if str(item["id"]) in chosen]
    return train, calibration
