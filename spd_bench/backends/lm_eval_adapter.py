"""``BackendLM``: lm-eval's ``LM`` interface over any backend's generate and loglikelihood.

A backend without an lm-eval model of its own returns ``BackendLM(self, handle, batch_size)``
from ``lm_eval_model``; lm-eval's task logic, filters and metrics still decide every number,
the backend only answers the requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lm_eval.api.model import LM

from spd_bench.backends.protocol import GenerationPlan

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from spd_bench.backends.protocol import Backend, Handle


def plan_from_gen_kwargs(gen_kwargs: dict[str, Any], batch_size: int) -> GenerationPlan:
    """lm-eval's ``generate_until`` arguments as a greedy or sampled plan (seed 0)."""
    until = gen_kwargs.get("until") or ()
    stop = (until,) if isinstance(until, str) else tuple(until)
    sampling = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature") or 0.0) > 0
    return GenerationPlan(
        max_new_tokens=int(gen_kwargs.get("max_gen_toks", 256)),
        temperature=float(gen_kwargs["temperature"]) if sampling else 0.0,
        top_p=float(gen_kwargs.get("top_p") or 1.0),
        top_k=int(gen_kwargs.get("top_k") or 0),
        stop=stop,
        batch_size=batch_size,
    )


class BackendLM(LM):
    """Answers lm-eval's requests with one backend and handle."""

    def __init__(self, backend: Backend, handle: Handle, batch_size: int = 32) -> None:
        super().__init__()
        self.backend = backend
        self.handle = handle
        self.batch_size = batch_size

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Requests with the same generation settings go to the backend together."""
        groups: dict[GenerationPlan, list[int]] = {}
        for index, request in enumerate(requests):
            _context, gen_kwargs = request.args
            groups.setdefault(plan_from_gen_kwargs(gen_kwargs, self.batch_size), []).append(index)
        answers = [""] * len(requests)
        for plan, indices in groups.items():
            completions = self.backend.generate(self.handle, [requests[i].args[0] for i in indices], plan)
            for index, texts in zip(indices, completions):
                answers[index] = texts[0]
        return answers

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [(str(request.args[0]), str(request.args[1])) for request in requests]
        results = self.backend.loglikelihood(self.handle, pairs, batch_size=self.batch_size)
        return [(result.logprob, result.is_greedy) for result in results]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("BackendLM scores continuations only; lm-eval tasks of output type"
                                  " loglikelihood_rolling need the hf backend (lm-eval's own HF model)")
