"""What the two diagnostic stages build: each writes ``diagnostics.json`` and returns the same
dict as the stage's info, so the pipeline hands it to the records without reading the file back."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spd_bench.diagnostics import DIAGNOSTICS_FILE
from spd_bench.store import atomic_write_json

if TYPE_CHECKING:
    from spd_bench.models import LoadedModel


def _rows(samples_folder: Path) -> list[dict[str, Any]]:
    text = (samples_folder / "samples.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def build_corpus(samples_folder: Path, reference_folder: Path | None, items: Sequence[dict[str, Any]], kind: str,
                 model_folder: Path, max_new_tokens: int, out: Path) -> dict[str, Any]:
    """Corpus diagnostics of one sample stage against raw_sd's (``reference_folder``), with the
    model's tokenizer alone (no weights loaded)."""
    from spd_bench.diagnostics.corpus import corpus_diagnostics
    from spd_bench.tokenization import load_tokenizer

    tokenizer = load_tokenizer(model_folder)
    result = corpus_diagnostics(
        _rows(samples_folder), {item["id"]: item for item in items}, kind,
        lambda text: tokenizer(text, add_special_tokens=False)["input_ids"], max_new_tokens,
        _rows(reference_folder) if reference_folder is not None else None,
    )
    atomic_write_json(out / DIAGNOSTICS_FILE, result)
    return result


def build_subspace(load_model: Callable[[], LoadedModel], projectors_file: Path, prompts: Sequence[str],
                   out: Path) -> dict[str, Any]:
    """Subspace diagnostics of one prepare stage's projectors on the training model."""
    from spd_bench.diagnostics.subspace import subspace_diagnostics
    from spd_bench.spd.extract import load_projectors

    loaded = load_model()
    result = subspace_diagnostics(loaded.model, loaded.tokenizer, load_projectors(projectors_file), prompts)
    atomic_write_json(out / DIAGNOSTICS_FILE, result)
    return result
