"""What the baselines that compare or vote on answers (``rft``, ``self_consistency``) require of a
training source; the answers themselves are read by ``spd_bench.answer_format``."""

from __future__ import annotations

from typing import Any

from spd_bench.answer_format import ANSWER_KINDS
from spd_bench.errors import UserError

def require_answer_kind(method: str, source: Any) -> None:
    """Refuse, before any generation, a training source whose items have no final answer."""
    if source.kind not in ANSWER_KINDS:
        hint = "; for code use exec_filter" if source.kind == "code" else ""
        raise UserError(
            f"method {method} reads final answers, but training source {source.name} is of kind {source.kind!r}"
            f" (supported: {', '.join(ANSWER_KINDS)}){hint}"
        )
