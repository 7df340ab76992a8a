"""How answers are written down: option letters and the canonical form of a number. One
definition, shared by the data loaders (labels) and the baselines that compare answers."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

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
