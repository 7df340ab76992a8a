"""Mathematical equivalence of a MATH answer to its reference, as lm-eval's MATH tasks judge it.

lm-eval's ``minerva_math`` tasks score ``math_verify``: ``verify(parse(gold), parse(response))``
with math-verify's default extraction (the last ``\\boxed{}``, else a final LaTeX or plain
expression), so ``0.5``, ``\\frac{1}{2}`` and ``\\dfrac12`` are the same answer where exact match
sees three. This module is that comparison as an lm-eval metric (a callable in a task config's
``metric_list``); the gold is the item's label, the reference solution's boxed answer, given
to ``parse`` boxed as the solution holds it.
"""

from __future__ import annotations

from typing import Any


def math_verify(references: list[Any], predictions: list[Any]) -> float:
    """1.0 when math-verify finds the prediction equivalent to the reference answer, else 0.0.

    lm-eval calls a metric with one reference and one (filtered) prediction per document; its
    name is the metric's name in the results (``math_verify/<filter>``). It never raises: lm-eval
    answers a TypeError from a metric by calling it again another way, and then ends the run, so
    an answer math-verify cannot parse or compare (any exception) scores 0.0.
    """
    from math_verify import parse, verify

    try:
        gold, prediction = references[0], predictions[0]
        if gold is None or not str(gold).strip() or prediction is None:
            return 0.0
        gold_text = str(gold) if "\\boxed" in str(gold) else f"\\boxed{{{gold}}}"
        return float(verify(parse(gold_text), parse(str(prediction))))
    except Exception:  # noqa: BLE001 - a document math-verify cannot judge is not equivalent
        return 0.0
