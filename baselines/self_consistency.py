"""``self_consistency``: keep the samples that agree with the majority answer (no labels).

k samples per training prompt; each sample's final answer is read (math: a number, multiple
choice: an option letter) and samples without one do not vote. The samples whose answer is
the most common one are kept; a tie for first place keeps nothing for that prompt.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from spd_baselines.answers import require_answer_kind
from spd_bench.answer_format import final_answer
from spd_baselines.curated import CuratedSD
from spd_bench.api import MethodContext, Sample


class SelfConsistency(CuratedSD):
    name = "self_consistency"
    description = "Self-consistency filter: k samples per prompt, keep those whose final answer is the majority answer."
    external_signal = None

    def validate(self, config: Any, source: Any) -> None:
        require_answer_kind(self.name, source)

    def keep(self, group: list[Sample], item: dict[str, Any], ctx: MethodContext) -> list[Sample]:
        answers = [final_answer(s.completion, item, ctx.source.kind) for s in group]
        ranked = Counter(a for a in answers if a is not None).most_common(2)
        if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
            return []
        majority = ranked[0][0]
        return [s for s, answer in zip(group, answers, strict=True) if answer == majority]
