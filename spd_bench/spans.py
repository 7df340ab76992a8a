"""Correctness-defining spans and the one prompt/answer tokenization shared by training and inference.

SPD's calibration loss is the answer's NLL restricted to the tokens that decide success (the
final number, the answer letter, a code solution's return expressions). Spans are found in
characters first, so the rules do not depend on a tokenizer, and mapped to tokens through the
tokenizer's offset mapping. Prompt and answer are tokenized separately and concatenated
everywhere (calibration, fine-tuning, generation), so the prompt tokens a model is trained on
are exactly the ones it is later prompted with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Callable

from spd_bench.errors import UserError

Range = tuple[int, int]

# An optional sign (a "-" not following a word, ")" or "]": "10-2" is a subtraction), an optional
# "$" that is left out of the span, then digits with optional thousands groups and decimals.
# A trailing "." is not a decimal point unless a digit follows.
_NUMBER = re.compile(r"(?P<sign>(?<![\w)\]])-)?(?P<dollar>\$)?(?P<num>\d+(?:,\d{3}(?!\d))*(?:\.\d+)?)")
# "Answer:" then one capital letter, optionally in brackets; a letter that starts a word
# ("Answer: Because") is not an answer letter.
_LETTER = re.compile(r"(?i:answer)\s*:\s*[(\[]?(?P<letter>[A-Z])(?![A-Za-z])")
# An answer that opens with its letter (a chat answer: the prompt ends with the assistant's header).
_LEADING_LETTER = re.compile(r"^\s*[(\[]?(?P<letter>[A-Z])(?![A-Za-z])")
# A return statement at the start of a line or after ":"/";" ("if x: return y").
_RETURN = re.compile(r"(?:^|[:;])[ \t]*return\b(?P<expr>[^\n]*)", re.MULTILINE)
_DEF = re.compile(r"^(?P<indent>[ \t]*)(?P<sig>(?:async[ \t]+)?def[ \t]+\w+[ \t]*)\(", re.MULTILINE)
_SIGNATURE_END = re.compile(r"\s*(?:->[^:]*)?:")
_OPEN, _CLOSE = "([{", ")]}"


def _snippet(text: str, width: int = 60) -> str:
    """A short repr of ``text`` for error messages: its start and end when it is long."""
    if len(text) <= width:
        return repr(text)
    half = width // 2
    return repr(text[:half]) + "..." + repr(text[-half:])


def _trimmed(text: str, start: int, end: int) -> Range | None:
    """``[start, end)`` without surrounding whitespace, or None when nothing else is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _number_ranges(match: re.Match[str]) -> list[Range]:
    """The sign and digits of a number match, leaving out a "$" between them."""
    num = match.span("num")
    if match.group("sign") and match.group("dollar"):
        return [match.span("sign"), num]
    return [(match.start(), num[1])] if match.group("sign") else [num]


def _numeric_answer(prompt: str, answer: str) -> list[Range]:
    marker = answer.rfind("####")
    if marker >= 0:
        found = _NUMBER.search(answer, marker + 4)
        where = "after the last '####'"
    else:
        found = None
        for found in _NUMBER.finditer(answer):
            pass
        where = "in the answer"
    if found is None:
        raise UserError(
            f"span rule numeric_answer: no number {where} of {_snippet(answer)};"
            " give the reference answer a final number or use span_rule: full"
        )
    return [(start + len(prompt), end + len(prompt)) for start, end in _number_ranges(found)]


def _answer_letter(prompt: str, answer: str) -> list[Range]:
    text = prompt + answer
    # Few-shot prompts hold earlier "Answer: X" lines: only a letter inside the answer counts.
    letters = [m.span("letter") for m in _LETTER.finditer(text) if m.start("letter") >= len(prompt)]
    leading = _LEADING_LETTER.match(answer)
    if not letters and leading is not None:
        start, end = leading.span("letter")
        letters = [(start + len(prompt), end + len(prompt))]
    if not letters:
        raise UserError(
            f"span rule answer_letter: no letter A-Z after 'Answer:' in {_snippet(prompt[-30:] + answer)};"
            " end the prompt with 'Answer:' or start the answer with the letter"
        )
    return [letters[-1]]


def _closing_bracket(text: str, open_at: int) -> int | None:
    """Index of the bracket closing the one at ``open_at`` (strings are not parsed)."""
    depth = 0
    for index in range(open_at, len(text)):
        char = text[index]
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:
                return index
    return None


def _signature(text: str, match: re.Match[str]) -> Range | None:
    """From ``def`` to the colon that ends the signature, across lines if the parameters wrap."""
    close = _closing_bracket(text, match.end() - 1)
    if close is None:
        return None
    end = _SIGNATURE_END.match(text, close + 1)
    return (match.start("sig"), end.end()) if end else None


def _open_function(prompt: str) -> Range | None:
    """The signature of the function the prompt ends inside (HumanEval style), if any.

    The last ``def`` counts only when every later non-blank line is indented deeper than it,
    so a few-shot example's solution earlier in the prompt is not mistaken for the target.
    """
    matches = list(_DEF.finditer(prompt))
    if not matches:
        return None
    last = matches[-1]
    signature = _signature(prompt, last)
    if signature is None:
        return None
    depth = len(last.group("indent").expandtabs())
    rest = prompt[signature[1] :].split("\n")[1:]
    for line in rest:
        if line.strip() and len(line) - len(line.lstrip()) <= depth:
            return None
    return signature


def _logical_line_end(text: str, start: int) -> int:
    """Where the statement that continues from ``start`` ends: past brackets that span lines and
    backslash continuations, at the newline that ends its logical line (or the end of ``text``)."""
    import io
    import tokenize

    rest = text[start:]
    line_starts = [0, *accumulate(len(line) for line in rest.splitlines(keepends=True))]
    try:
        for token in tokenize.generate_tokens(io.StringIO(rest).readline):
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                row, col = token.start
                return start + min(line_starts[row - 1] + col, len(rest))
    except (tokenize.TokenError, SyntaxError):  # unclosed bracket or string: the rest is the expression
        pass
    return len(text)


def _code_return(prompt: str, answer: str) -> list[Range]:
    offset = len(prompt)
    returns = [_trimmed(answer, m.start("expr"), _logical_line_end(answer, m.start("expr")))
               for m in _RETURN.finditer(answer)]
    ranges = [(start + offset, end + offset) for start, end in filter(None, returns)]
    if not ranges:
        return _full(prompt, answer)
    signatures = [_signature(answer, m) for m in _DEF.finditer(answer)]
    ranges += [(start + offset, end + offset) for start, end in filter(None, signatures)]
    in_prompt = _open_function(prompt)
    if in_prompt is not None:
        ranges.append(in_prompt)
    return ranges


def _full(prompt: str, answer: str) -> list[Range]:
    span = _trimmed(answer, 0, len(answer))
    if span is None:
        raise UserError(f"span rule full: the reference answer {_snippet(answer)} is empty; check the data's answer field")
    return [(span[0] + len(prompt), span[1] + len(prompt))]


_RULES: dict[str, Callable[[str, str], list[Range]]] = {
    "numeric_answer": _numeric_answer,
    "answer_letter": _answer_letter,
    "code_return": _code_return,
    "full": _full,
}
SPAN_RULES = tuple(_RULES)  # the names a task or source definition may give as span_rule


def span_char_ranges(rule: str, prompt: str, answer: str) -> list[Range]:
    """Sorted ``[start, end)`` ranges of ``prompt + answer`` whose tokens decide correctness."""
    if rule not in _RULES:
        raise UserError(f"unknown span rule {rule!r}: use one of {', '.join(SPAN_RULES)}")
    return sorted(set(_RULES[rule](prompt, answer)))


@dataclass
class EncodedExample:
    """Token ids of prompt + answer (+ EOS); ``span_mask`` marks correctness-defining tokens."""

    input_ids: list[int]
    prompt_len: int
    span_mask: list[bool] | None


def _tokenize(tokenizer: Any, text: str, special: bool, offsets: bool) -> tuple[list[int], list[Range]]:
    encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=offsets)
    ids = list(encoded["input_ids"])
    return ids, [tuple(pair) for pair in encoded["offset_mapping"]] if offsets else []


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids for generation: with the tokenizer's special tokens (e.g. BOS), as in training."""
    return _tokenize(tokenizer, prompt, special=True, offsets=False)[0]


def _token_mask(text: str, ranges: list[Range], offsets: list[Range]) -> list[bool]:
    """Tokens whose characters include a non-whitespace character of a range ("␣16" counts for "16")."""
    inside = [False] * len(text)
    for start, end in ranges:
        for index in range(start, end):
            inside[index] = not text[index].isspace()
    before = [0, *accumulate(inside)]
    return [before[end] > before[start] for start, end in offsets]


def encode_example(
    tokenizer: Any,
    prompt: str,
    answer: str,
    rule: str | None = None,
    max_length: int | None = None,
    add_eos: bool = True,
) -> EncodedExample:
    """Tokenize prompt (with special tokens) and answer (without) separately and concatenate them.

    With ``rule``, also mark the span tokens; a span that truncation cuts, or that marks no
    token, is an error because the calibration loss would silently lose its target.
    """
    with_offsets = rule is not None
    if with_offsets and not getattr(tokenizer, "is_fast", False):
        raise UserError("span rules need a fast tokenizer (one with a tokenizer.json) for offset mappings")
    prompt_ids, prompt_offsets = _tokenize(tokenizer, prompt, special=True, offsets=with_offsets)
    answer_ids, answer_offsets = _tokenize(tokenizer, answer, special=False, offsets=with_offsets)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    input_ids = prompt_ids + answer_ids + eos
    keep = len(input_ids) if max_length is None else max_length
    if keep < 1:
        raise UserError(f"max_length must be at least 1, got {max_length}")
    span_mask = None
    if rule is not None:
        shifted = [(start + len(prompt), end + len(prompt)) for start, end in answer_offsets]
        offsets = prompt_offsets + shifted + [(0, 0)] * len(eos)
        full_mask = _token_mask(prompt + answer, span_char_ranges(rule, prompt, answer), offsets)
        if not any(full_mask):
            raise UserError(f"span rule {rule}: no token covers the span in {_snippet(answer)}; check the tokenizer")
        if any(full_mask[keep:]):
            raise UserError(
                f"span rule {rule}: max_length {max_length} cuts the span off ({len(input_ids)} tokens);"
                " raise max_length"
            )
        span_mask = full_mask[:keep]
    return EncodedExample(input_ids=input_ids[:keep], prompt_len=min(len(prompt_ids), keep), span_mask=span_mask)
