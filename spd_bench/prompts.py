"""Prompt formats: a task's text as is ("plain"), or wrapped in the model's chat template ("chat");
"auto" is chat when the model's tokenizer has a template, plain otherwise.

A code task under a chat template is asked the way EvalPlus asks chat models: an instruction to
answer with a self-contained script in a markdown block, the assistant's turn opened with
EvalPlus's response prefix and a ```` ```python ```` fence, and EvalPlus's stop sequences for chat
answers (the completion-mode stops such as ``"\ndef"`` would cut a chat answer at its first line).
The answer is then a whole program, which EvalPlus's sanitizer extracts.

The rendered prompt replaces the item's prompt before anything else sees it, so sampling,
fine-tuning, lm-eval and EvalPlus all use exactly the same text.
"""

from __future__ import annotations

from typing import Any

from spd_bench.errors import UserError

PROMPT_FORMATS = ("auto", "plain", "chat")
PLAIN_PROMPT = "plain_prompt"  # a rendered item keeps the task's own text here (code references need it)


def plain_prompt(item: dict[str, Any]) -> str:
    """The item's prompt as its task wrote it: before chat rendering and any few-shot context (the
    text a code completion continues)."""
    return item.get(PLAIN_PROMPT, item["prompt"])


def resolve_format(prompt_format: str, has_chat_template: bool, model: str) -> str:
    """The concrete format (plain or chat) for a model; chat without a template is refused."""
    if prompt_format not in PROMPT_FORMATS:
        raise UserError(f"prompt_format {prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
    if prompt_format == "auto":
        return "chat" if has_chat_template else "plain"
    if prompt_format == "chat" and not has_chat_template:
        raise UserError(f"prompt_format chat needs a chat template, and the tokenizer of {model} has none;"
                        " use --set prompt_format=plain")
    return prompt_format


# EvalPlus's own instruction and response prefix for chat models (evalplus.codegen, the default
# "no-hint" prompt), and its stop sequences for them (evalplus.provider: EOS plus the closing fence).
CODE_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a markdown"
                    " code block:")
CODE_RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the problem and passes"
                        " corresponding tests:")


def chat_code_stops() -> tuple[str, ...]:
    """EvalPlus's stop sequences for a chat model's code answer."""
    from evalplus.provider.utility import EOS

    return (*EOS, "\n```\n")


def answer_stops(kind: str, stop: tuple[str, ...], prompt_format: str) -> tuple[str, ...]:
    """The stop sequences a task or source samples with in ``prompt_format``: its own, except for
    code under a chat template, which stops where EvalPlus stops chat answers."""
    return chat_code_stops() if prompt_format == "chat" and kind == "code" else tuple(stop)


def _code_chat_prompt(task_prompt: str, tokenizer: Any) -> str:
    from evalplus.provider.utility import make_raw_chat_prompt

    return make_raw_chat_prompt(task_prompt, CODE_INSTRUCTION, CODE_RESPONSE_PREFIX, tokenizer)


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [bos]


def render_items(items: list[dict[str, Any]], tokenizer: Any, prompt_format: str, kind: str = "") -> list[dict[str, Any]]:
    """Items with their prompts in ``prompt_format`` (new dicts; the loaded data stays untouched).

    ``kind`` code asks for a whole program in EvalPlus's chat form (on the task's bare prompt).

    Templates that write the BOS token themselves would give a second BOS once the prompt is
    tokenized with special tokens (as every stage does), so a leading BOS is left to the tokenizer.
    The task's own text stays under ``plain_prompt``: a code task's reference solution continues it.
    """
    if prompt_format == "plain":
        return items
    if prompt_format != "chat":
        raise UserError(f"prompt_format {prompt_format!r} is not one of plain, chat")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("prompt_format chat needs a model whose tokenizer has a chat template; use prompt_format plain")
    bos_text = tokenizer.bos_token if _adds_bos(tokenizer) else None
    rendered = []
    for item in items:
        if kind == "code":
            prompt = _code_chat_prompt(plain_prompt(item), tokenizer)
        else:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": item["prompt"]}], tokenize=False, add_generation_prompt=True)
        if bos_text and prompt.startswith(bos_text):
            prompt = prompt[len(bos_text):]
        rendered.append({**item, "prompt": prompt, PLAIN_PROMPT: plain_prompt(item)})
    return rendered
