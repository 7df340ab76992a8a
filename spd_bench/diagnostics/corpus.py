"""Training-corpus diagnostics: correctness against labels, empty and truncated completions,
length, distinct-n, and agreement with raw self-distillation's corpus at the same seed.

Computed from a sample stage's ``samples.jsonl`` (what the method generated, before curation),
so every method of a (model, source, seed) is measured on the same footing. Correctness reads
final answers through ``spd_bench.answer_format``, the module ``rft`` filters with, so this
diagnostic and ``rft`` can never disagree about what a completion answered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from spd_bench.answer_format import ANSWER_KINDS, final_answer, reference_answer

NEEDS_EXECUTION = "not computed (needs execution)"
LABELS_NOTE = "labels used for this diagnostic only; the method never saw them"
LABELS_USED_NOTE = "the method itself uses an external signal ({signal})"

Row = dict[str, Any]  # one line of samples.jsonl: prompt_id, prompt, completion, sample_index


def correct_share(rows: Sequence[Row], items: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    """Share of completions whose final answer equals their item's label, over labelled items.

    Code needs execution to be judged and NLL sources have no answer: both say so instead of a number.
    """
    if kind == "code":
        return {"correct_share": NEEDS_EXECUTION, "n_judged": 0}
    if kind not in ANSWER_KINDS:
        return {"correct_share": f"not computed (no final answer in {kind!r} items)", "n_judged": 0}
    verdicts = []
    for row in rows:
        item = items[row["prompt_id"]]
        gold = reference_answer(item, kind)
        if gold is not None:
            verdicts.append(final_answer(row["completion"], item, kind) == gold)
    share = sum(verdicts) / len(verdicts) if verdicts else None
    return {"correct_share": share, "n_judged": len(verdicts)}


def distinct_n(token_lists: Sequence[Sequence[int]], n: int) -> float | None:
    """Unique n-grams over all n-grams of the corpus (None when no completion has n tokens)."""
    grams = [tuple(tokens[i:i + n]) for tokens in token_lists for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def identical_share(rows: Sequence[Row], reference: Sequence[Row] | None) -> float | None:
    """Share of completions equal to the reference corpus's completion for the same prompt and
    sample index, over the pairs both corpora have; None without a reference or a shared pair."""
    if reference is None:
        return None
    theirs = {(r["prompt_id"], r["sample_index"]): r["completion"] for r in reference}
    pairs = [(r["completion"], theirs[(r["prompt_id"], r["sample_index"])]) for r in rows
             if (r["prompt_id"], r["sample_index"]) in theirs]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def corpus_diagnostics(rows: Sequence[Row], items: dict[str, dict[str, Any]], kind: str,
                       tokenize: Callable[[str], list[int]], max_new_tokens: int,
                       reference: Sequence[Row] | None) -> dict[str, Any]:
    """Every corpus number of one sample stage (docs/diagnostics.md gives each formula).

    ``tokenize``: the model's tokenizer without special tokens; a completion of ``max_new_tokens``
    tokens or more is counted as truncated (generation stopped by the budget, not a stop string).
    """
    tokens = [tokenize(row["completion"]) for row in rows]
    count = len(rows)
    return {
        **correct_share(rows, items, kind),
        "n_completions": count,
        "empty_share": sum(not row["completion"].strip() for row in rows) / count if count else None,
        "truncated_share": sum(len(t) >= max_new_tokens for t in tokens) / count if count else None,
        "mean_tokens": sum(len(t) for t in tokens) / count if count else None,
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "identical_to_raw_sd": identical_share(rows, reference),
        "max_new_tokens": max_new_tokens,
    }


def labels_note(external_signal: str | None) -> str:
    """What the record says about the labels the correctness share was read against."""
    return LABELS_NOTE if external_signal is None else LABELS_USED_NOTE.format(signal=external_signal)
