"""Prompt formats: a task's text as is ("plain"), or wrapped in the model's chat template ("chat").

The rendered prompt replaces the item's prompt before anything else sees it, so sampling,
fine-tuning, lm-eval and EvalPlus all use exactly the same text.
"""

from __future__ import annotations

from typing import Any

from spd_bench.errors import UserError

PROMPT_FORMATS = ("plain", "chat")


def render_items(items: list[dict[str, Any]], tokenizer: Any, prompt_format: str) -> list[dict[str, Any]]:
    """Items with their prompts in ``prompt_format`` (new dicts; the loaded data stays untouched)."""
    if prompt_format == "plain":
        return items
    if prompt_format != "chat":
        raise UserError(f"prompt_format {prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("prompt_format chat needs a model whose tokenizer has a chat template; use prompt_format plain")
    return [
        {**item, "prompt": tokenizer.apply_chat_template(
            [{"role": "user", "content": item["prompt"]}], tokenize=False, add_generation_prompt=True)}
        for item in items
    ]
