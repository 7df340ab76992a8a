"""Reference NLL: how likely the model finds each item's reference answer (lower is better).

The paper scores its out-of-domain code set (CodeAlpaca) this way, since free-form
instructions have no tests to run. Prompt and answer are tokenized exactly as in training
(``spans.encode_example``, no EOS), and each item's score is the mean negative log-likelihood
per answer token, in nats; the task's ``nll`` is the mean over items, so every item weighs the
same whatever its length. The model's backend computes the log-likelihoods
(``Backend.loglikelihood``); an answer that does not fit keeps its end and loses the prompt's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings

if TYPE_CHECKING:
    from spd_bench.backends.protocol import Backend, Handle


class ReferenceNLL:
    """Mean per-token NLL of ``item["answer"]`` given ``item["prompt"]``; metric ``nll``."""

    def score_model(
        self, backend: Backend, handle: Handle, task: Any, items: list[dict[str, Any]], settings: ScoreSettings
    ) -> ScoreOutput:
        results = backend.loglikelihood(
            handle, [(item["prompt"], item["answer"]) for item in items], batch_size=settings.batch_size
        )
        for item, result in zip(items, results):
            if result.n_tokens < 1:
                raise UserError(f"item {item['id']}: the reference answer is empty; NLL scoring needs an answer")
        scores = [-result.logprob / result.n_tokens for result in results]
        per_item = [
            {"doc_id": i, "id": item["id"], "score": scores[i], "n_tokens": results[i].n_tokens}
            for i, item in enumerate(items)
        ]
        return ScoreOutput(
            metrics={"nll": sum(scores) / len(scores)} if scores else {},
            primary_metric="nll",
            higher_is_better=False,
            per_item=per_item,
            native={"unit": "nats per answer token, mean over items", "add_eos": False,
                    "n_truncated": sum(result.truncated for result in results),
                    "max_length": backend.max_length(handle)},
        )

    def score_responses(
        self, task: Any, items: list[dict[str, Any]], responses: dict[str, list[str]], settings: ScoreSettings
    ) -> ScoreOutput:
        raise UserError(
            f"task {task.name} is scored by the model's likelihood of reference answers, which stored responses"
            " cannot give; score it with `spd-bench run`"
        )
