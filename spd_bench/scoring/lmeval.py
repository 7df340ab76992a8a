"""Scoring through lm-eval's ``simple_evaluate``, with task configs built from spd-bench tasks.

Items are written to a local JSONL file and lm-eval reads them with ``dataset_path: json``;
the model comes from its backend's ``lm_eval_model`` (for Hugging Face, lm-eval's own HF model
on the in-memory model, adapter attached). Stored
responses are scored through the same path by ``ReplayLM``, which answers lm-eval's requests
from a file instead of a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spd_bench.config import stable_hash
from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings
from spd_bench.scoring.lmeval_tasks import StoredAnswersLM, clean, evaluate, lm_eval_files, numbers, quiet, version
from spd_bench.scoring.math_equivalence import math_verify

if TYPE_CHECKING:
    from spd_bench.backends.protocol import Backend, Handle

# Answer extraction per answer format (a task's ``options.answer_format``). "numeric" uses
# lm-eval's own GSM8K filters: strict reads '#### n', flexible the last number.
_FLEXIBLE_NUMBER = {
    "name": "flexible-extract",
    "filter": [
        {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
        {"function": "take_first"},
    ],
}
ANSWER_FORMATS: dict[str, dict[str, Any]] = {
    "numeric": {
        "filters": [
            {"name": "strict-match",
             "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]},
            _FLEXIBLE_NUMBER,
        ],
        "metric": {"ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]},
        "primary": "flexible-extract",
    },
    # MATH: scored as lm-eval's minerva_math scores it, by math-verify's equivalence of the whole
    # response to the boxed reference answer (math_verify/response, the primary); exact match of
    # the last \boxed{...} (one level of nested braces, without spaces and '$') stays beside it.
    "boxed": {
        "filters": [
            {"name": "boxed", "filter": [
                {"function": "regex", "group_select": -1, "regex_pattern": "\\\\boxed\\{((?:[^{}]|\\{[^{}]*\\})*)\\}"},
                {"function": "take_first"}]},
            _FLEXIBLE_NUMBER,
            {"name": "response", "filter": [{"function": "take_first"}]},
        ],
        "metric": {"ignore_case": False, "ignore_punctuation": False, "regexes_to_ignore": [" ", "\\$", "\\\\!"]},
        "extra_metrics": [{"metric": math_verify, "aggregation": "mean", "higher_is_better": True}],
        "primary": "boxed",
        "primary_metric": "math_verify/response",
    },
    # Free-text answers (BBH): the text after "the answer is", else the first non-blank line.
    "text": {
        "filters": [
            {"name": "answer-is", "filter": [
                {"function": "regex", "group_select": -1, "regex_pattern": "(?i)answer is:?\\s*([^\\n]*?)\\.?\\s*(?:\\n|$)"},
                {"function": "take_first"}]},
            {"name": "first-line", "filter": [
                {"function": "regex", "regex_pattern": "(?m)^\\s*(\\S[^\\n]*?)\\.?\\s*$"}, {"function": "take_first"}]},
        ],
        "metric": {"ignore_case": True, "ignore_punctuation": True, "regexes_to_ignore": []},
        "primary": "first-line",
    },
}


def answer_format(task: Any) -> dict[str, Any]:
    name = task.options.get("answer_format", "numeric")
    if name not in ANSWER_FORMATS:
        raise UserError(f"task {task.name}: options.answer_format {name!r} is not one of {', '.join(ANSWER_FORMATS)}")
    return ANSWER_FORMATS[name]


def _write_docs(items: list[dict[str, Any]], work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    # The configs name fields rather than Jinja templates (lm-eval compiles a template on every
    # call, several per document), so the exact-match reference is written as text here.
    docs = [{**item, "doc_id": i, "label": None if item.get("label") is None else str(item["label"])} for i, item in enumerate(items)]
    lines = [json.dumps(doc, sort_keys=True) for doc in docs]
    text = "\n".join(lines) + "\n"
    path = work_dir / f"docs-{stable_hash(text)}.jsonl"
    if not path.exists():
        from spd_bench.store import atomic_write_text

        atomic_write_text(path, text)
    return path


def generate_config(task: Any, docs: Path, settings: ScoreSettings) -> dict[str, Any]:
    """lm-eval ``generate_until`` config: exact match after the task's answer extraction."""
    return {
        "task": f"spdbench_{task.name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "prompt",
        "doc_to_target": "label",
        "generation_kwargs": {
            "until": list(task.stop) or ["\n\n"],
            "do_sample": settings.temperature > 0,
            "temperature": settings.temperature,
            "max_gen_toks": settings.max_new_tokens,
        },
        "filter_list": answer_format(task)["filters"],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, **answer_format(task)["metric"]},
                        *answer_format(task).get("extra_metrics", [])],
        "num_fewshot": 0,
        "metadata": {"version": 1},
    }


def multiple_choice_config(task: Any, docs: Path, settings: ScoreSettings) -> dict[str, Any]:
    """lm-eval ``multiple_choice`` config: option-text log-likelihood, acc and acc_norm."""
    return {
        "task": f"spdbench_{task.name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": task.options.get("target_delimiter", " "),
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "num_fewshot": 0,
        "metadata": {"version": 1},
    }


# Catalogue tasks are seeded 0 throughout (their stored numbers were scored so); lm-eval's own
# tasks keep simple_evaluate's defaults (lmeval_tasks.SEEDS).
SEEDS = {"random_seed": 0, "numpy_seed": 0, "torch_seed": 0, "fewshot_seed": 0}


def _load_config(config: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's loaded task dict for one task config (no index of lm-eval's own tasks needed)."""
    from lm_eval.tasks import TaskManager

    quiet()
    return TaskManager(include_path=None, include_defaults=False).load([config])


class _LMEvalScorer:
    def primary_metric(self, task: Any) -> str:
        raise NotImplementedError

    def config(self, task: Any, docs: Path, settings: ScoreSettings) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, lm: Any, task: Any, items: list[dict[str, Any]], settings: ScoreSettings) -> ScoreOutput:
        docs = _write_docs(items, settings.work_dir)
        config = self.config(task, docs, settings)
        results = evaluate(lm, _load_config(config), SEEDS)
        name = config["task"]
        raw = clean(results["results"][name])
        metrics = numbers(raw)
        primary = self.primary_metric(task)
        per_item = self.per_item(results["samples"][name], primary)
        config_stored = clean({**config, "dataset_kwargs": {"data_files": {"test": docs.name}}})
        fewshot = {"num_fewshot": task.num_fewshot, "fewshot_source": task.fewshot_source}
        return ScoreOutput(
            metrics=metrics,
            primary_metric=primary,
            higher_is_better=True,
            per_item=per_item,
            native={"lm_eval_results": raw, "lm_eval_task_config": config_stored, "lm_eval_version": version(),
                    "fewshot": fewshot},
            # the few-shot examples are part of each document's prompt, so lm-eval itself counts 0 shots
            files=lm_eval_files(results, {"model": "spd-bench", "limit": len(items), "batch_size": settings.batch_size,
                                          "fewshot_in_prompt": fewshot}, SEEDS),
        )

    def per_item(self, samples: list[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def score_model(
        self, backend: Backend, handle: Handle, task: Any, items: list[dict[str, Any]], settings: ScoreSettings
    ) -> ScoreOutput:
        """Score ``handle`` through the lm-eval model its backend provides."""
        quiet()
        with backend.lm_eval_model(handle, batch_size=settings.batch_size) as lm:
            return self._run(lm, task, items, settings)

    def score_lm(self, lm: Any, task: Any, items: list[dict[str, Any]], settings: ScoreSettings) -> ScoreOutput:
        """Score any lm-eval LM, e.g. an lm-eval samples file replayed (``spd-bench score``)."""
        return self._run(lm, task, items, settings)

    def score_responses(self, task: Any, items: list[dict[str, Any]], responses: dict[str, list[str]], settings: ScoreSettings) -> ScoreOutput:
        return self._run(ReplayLM(items, responses), task, items, settings)


class LMEvalGenerate(_LMEvalScorer):
    def primary_metric(self, task: Any) -> str:
        return answer_format(task).get("primary_metric", "exact_match/" + answer_format(task)["primary"])

    def config(self, task: Any, docs: Path, settings: ScoreSettings) -> dict[str, Any]:
        return generate_config(task, docs, settings)

    def per_item(self, samples: list[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
        by_doc: dict[int, dict[str, Any]] = {}
        for sample in samples:
            entry = by_doc.setdefault(
                sample["doc_id"],
                {"doc_id": sample["doc_id"], "id": sample["doc"].get("id"), "response": clean(sample["resps"][0][0]), "target": sample["target"]},
            )
            for metric in sample["metrics"]:  # exact_match, and math_verify where the format adds it
                entry[f"{metric}/{sample['filter']}"] = float(sample[metric])
            entry[f"extracted/{sample['filter']}"] = clean(sample["filtered_resps"][0])
        rows = [by_doc[k] for k in sorted(by_doc)]
        for row in rows:
            row["score"] = row[primary]
        return rows


class LMEvalMultipleChoice(_LMEvalScorer):
    def primary_metric(self, task: Any) -> str:
        return "acc"

    def config(self, task: Any, docs: Path, settings: ScoreSettings) -> dict[str, Any]:
        return multiple_choice_config(task, docs, settings)

    def per_item(self, samples: list[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
        rows = []
        for sample in sorted(samples, key=lambda s: s["doc_id"]):
            logliks = [float(r[0]) for r in sample["filtered_resps"]]
            rows.append(
                {
                    "doc_id": sample["doc_id"],
                    "id": sample["doc"].get("id"),
                    "response": int(max(range(len(logliks)), key=logliks.__getitem__)),
                    "target": sample["target"],
                    "score": float(sample["acc"]),
                    "acc_norm": float(sample["acc_norm"]),
                }
            )
        return rows


def ReplayLM(items: list[dict[str, Any]], responses: dict[str, list[str]]) -> Any:
    """lm-eval's requests answered from stored responses, keyed by each document's item id.

    generate_until gets the stored completion; loglikelihood gives 0 to the stored choice (an
    option index, or its text) and -1e9 to the others, so lm-eval's own metrics apply.
    """
    missing = [item["id"] for item in items if item["id"] not in responses]
    if missing:
        raise UserError(f"no stored response for item {missing[0]!r}; the samples file must cover every item")
    stored = {item["id"]: responses[item["id"]][0] for item in items}

    def answer(request: Any, copy: int) -> Any:
        response = stored[request.doc["id"]]
        if request.request_type == "generate_until":
            return response
        if request.request_type != "loglikelihood":
            raise UserError("stored responses cannot be scored by likelihood of a whole text")
        choices = request.doc.get("choices", [])
        chosen = str(response).strip()
        chosen_text = choices[int(chosen)] if chosen.isdigit() and int(chosen) < len(choices) else chosen
        hit = request.args[1].strip() == str(chosen_text).strip()
        return (0.0 if hit else -1e9, hit)

    return StoredAnswersLM(answer)
