"""How answers are written down and read back: option letters, the canonical form of a number,
and the final answer of a completion. One definition, shared by the data loaders (labels), the
baselines that compare or vote on answers (``rft``, ``self_consistency``) and the training-corpus
diagnostics, so none of them can disagree about what a completion answered. Answers are returned
as comparable keys: a normalised number for math, an option letter for multiple choice."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from spd_bench.errors import UserError

LETTERS = "ABCDEFGHIJ"  # multiple-choice options, in order


def normalize_number(text: str) -> str | None:
    """``"$1,234.50."`` -> ``"1234.5"``; ``"16.0"`` -> ``"16"``; None when not a number."""
    cleaned = str(text).strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


ANSWER_KINDS = ("math", "multiple_choice")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def extract_number(text: str) -> str | None:
    """The first number after ``####`` when the marker is present, else the last number."""
    _, marker, after = text.partition("####")
    found = _NUMBER.findall(after if marker else text)
    if not found:
        return None
    return normalize_number(found[0] if marker else found[-1])


def extract_choice(text: str, choices: list[str]) -> str | None:
    """The option letter a completion picks, read in this order:

    a leading letter (" B", "(B)", "B. 26"), "answer is B" / "Answer: B", or the text of exactly
    one option (" 26" when option B is "26"). None when no rule applies or options tie.
    """
    letters = LETTERS[: len(choices)]
    if not letters:
        return None
    stripped = text.strip()
    end = r"(?=$|[\s.,:;)])"
    leading = re.match(rf"\(?([{letters}])\)?{end}", stripped)
    if leading:
        return leading.group(1)
    stated = re.search(rf"(?i:answer)(?:\s+(?i:is))?\s*:?\s*\(?([{letters}])\)?{end}", stripped)
    if stated:
        return stated.group(1)
    named = [
        letters[index]
        for index, choice in enumerate(choices[: len(letters)])
        if choice.strip() and re.search(rf"(?<!\w){re.escape(choice.strip())}(?!\w)", stripped, re.IGNORECASE)
    ]
    return named[0] if len(named) == 1 else None


def final_answer(text: str, item: dict[str, Any], kind: str) -> str | None:
    """The comparable answer of a completion to ``item`` (a task of ``kind``)."""
    if kind == "math":
        return extract_number(text)
    if kind == "multiple_choice":
        return extract_choice(text, list(item.get("choices") or []))
    raise UserError(f"no final-answer rule for {kind!r} items; answers are read for {', '.join(ANSWER_KINDS)} tasks")


def reference_answer(item: dict[str, Any], kind: str) -> str | None:
    """The item's labelled answer in the same form as ``final_answer``; None when it has none."""
    label = str(item.get("label") or "").strip()
    if kind == "math":
        return normalize_number(label) if label else None
    if kind == "multiple_choice":
        choices = list(item.get("choices") or [])
        gold = item.get("gold")
        if isinstance(gold, int) and 0 <= gold < len(choices):
            return LETTERS[gold]
        if len(label) == 1 and label.upper() in LETTERS[: len(choices)]:
            return label.upper()
        return extract_choice(label, choices) if label else None
    raise UserError(f"no final-answer rule for {kind!r} items; answers are read for {', '.join(ANSWER_KINDS)} tasks")
