"""``rft``: rejection-sampling fine-tuning (STaR-style correctness filtering against labels).

k samples per training prompt; a sample is kept when its final answer equals the item's label
(math: the number after ``####`` else the last number; multiple choice: the option letter or
text). A prompt with no correct sample contributes nothing. Uses labels, so it is reported
apart from the methods that need no external signal.
"""

from __future__ import annotations

from typing import Any

from spd_baselines.answers import require_answer_kind
from spd_bench.answer_format import final_answer, reference_answer
from spd_baselines.curated import CuratedSD
from spd_bench.api import MethodContext, Sample
from spd_bench.errors import UserError


class RFT(CuratedSD):
    name = "rft"
    description = "Rejection-sampling fine-tuning: k samples per prompt, keep those whose final answer matches the label."
    external_signal = "labels"

    def validate(self, config: Any, source: Any) -> None:
        require_answer_kind(self.name, source)

    def check(self, ctx: MethodContext) -> None:
        unlabelled = [item["id"] for item in ctx.data.train if reference_answer(item, ctx.source.kind) is None]
        if unlabelled:
            raise UserError(
                f"method rft needs a usable label on every training item of {ctx.source.name}, but {len(unlabelled)}"
                f" have none (e.g. {unlabelled[0]}); give each item a 'label' (a number, or an option letter)"
            )

    def keep(self, group: list[Sample], item: dict[str, Any], ctx: MethodContext) -> list[Sample]:
        reference = reference_answer(item, ctx.source.kind)
        return [s for s in group if final_answer(s.completion, item, ctx.source.kind) == reference]
