"""Span rules (characters) and prompt/answer encoding (tokens) on two tokenizers that split text differently.

GPT-2's byte-level BPE keeps a leading space inside tokens (" 16") and groups digits in threes;
the local BPE adds BOS/EOS, prepends a "▁" to each separately tokenized text and splits every
digit. The same character spans must come out as the same marked text with both.
"""

from __future__ import annotations

import os
import string
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from spd_bench.errors import UserError  # noqa: E402
from spd_bench.spans import encode_example, encode_prompt, span_char_ranges  # noqa: E402
from spd_bench.spans import SPAN_RULES  # noqa: E402
from gpt2_tokenizer import load_gpt2_tokenizer  # noqa: E402  (tests/ is on sys.path under pytest)

HUMANEVAL_PROMPT = (
    "from typing import List\n\n\n"
    "def has_close_elements(numbers: List[float],\n"
    "                       threshold: float) -> bool:\n"
    '    """Check if any two numbers are closer than threshold.\n'
    "    >>> has_close_elements([1.0, 2.0], 0.5)\n"
    "    False\n"
    '    """\n'
)
HUMANEVAL_ANSWER = (
    "    for i, a in enumerate(numbers):\n"
    "        for b in numbers[i + 1:]:\n"
    "            if abs(a - b) < threshold: return True\n"
    "    return False\n"
)
MBPP_PROMPT = "Write a function to find the larger of two numbers.\n"
MBPP_ANSWER = "def larger(a, b):\n    if a > b:\n        return a\n    return b\n"

# (prompt, answer, rule, the text each span must cover, in order)
CASES = [
    ("Q: 1+2?\nA:", " It is 3 + 2 = 5.\n#### 123456", "numeric_answer", ["123456"]),
    ("Q: how cold?\nA:", " It falls by 20 to -12.", "numeric_answer", ["-12"]),
    ("Q: how many?\nA:", " In all 1,234.", "numeric_answer", ["1,234"]),
    ("Q: price?\nA:", " It costs $5.", "numeric_answer", ["5"]),
    ("Q: half of 7?\nA:", " 7 / 2 = 3.5\n#### 3.5", "numeric_answer", ["3.5"]),
    ("Q: best?\nAnswer:", " B", "answer_letter", ["B"]),
    ("Q: best?\nAnswer:", "B)", "answer_letter", ["B"]),
    ("Q: best?\nAnswer:", " (C).", "answer_letter", ["C"]),
    ("Q: best?\nAnswer:", "B. 26", "answer_letter", ["B"]),
    ("Q: best?\n", "Answer:(B)", "answer_letter", ["B"]),
    # a chat prompt ends with the assistant's header: the answer opens with its letter
    ("<|im_start|>user\nQ: best?\nAnswer:<|im_end|>\n<|im_start|>assistant\n", " B", "answer_letter", ["B"]),
    (MBPP_PROMPT, MBPP_ANSWER, "code_return", ["def larger(a, b):", "a", "b"]),
    (
        HUMANEVAL_PROMPT,
        HUMANEVAL_ANSWER,
        "code_return",
        ["def has_close_elements(numbers: List[float],\n                       threshold: float) -> bool:", "True", "False"],
    ),
    ("Q: say hi\nA:", " Hello there!\n", "full", ["Hello there!"]),
]


CASE_IDS = [f"{rule}-{index}" for index, (_, _, rule, _) in enumerate(CASES)]


def covered(prompt: str, answer: str, rule: str) -> list[str]:
    return [(prompt + answer)[start:end] for start, end in span_char_ranges(rule, prompt, answer)]


# ---- character spans -------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "answer", "rule", "expected"), CASES, ids=CASE_IDS)
def test_span_text(prompt: str, answer: str, rule: str, expected: list[str]) -> None:
    assert covered(prompt, answer, rule) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (" Ten minus two: 10-2 = 8", ["8"]),  # "-" after a digit is subtraction, not a sign
        (" so x = 10-2", ["2"]),
        (" The balance is -$5 now.", ["-", "5"]),  # "$" left out between sign and digits
        (" #### $1,234", ["1,234"]),
        (" 7 apples and 1,2345 pears", ["2345"]),  # "1,2345" is no thousands group
        (" 3 then 4 then (-6)", ["-6"]),
        (" 5 #### 9, finally 7", ["9"]),  # the number after "####" wins over later ones
    ],
)
def test_numeric_awkward(answer: str, expected: list[str]) -> None:
    assert covered("Q:", answer, "numeric_answer") == expected


def test_letter_ignores_few_shot_answers_in_prompt() -> None:
    prompt = "Q: first?\nAnswer: A\n\nQ: second?\nAnswer:"
    ranges = span_char_ranges("answer_letter", prompt, " D")
    assert ranges == [(len(prompt) + 1, len(prompt) + 2)]


def test_letter_takes_last_answer_inside_answer_text() -> None:
    answer = "Answer: A is wrong because of x. Answer: C"
    assert covered("Q?\n", answer, "answer_letter") == ["C"]


def test_code_signature_of_few_shot_example_is_not_taken() -> None:
    prompt = "Example:\ndef one():\n    return 1\n\nNow write two.\n"
    answer = "def two():\n    return 2\n"
    assert covered(prompt, answer, "code_return") == ["def two():", "2"]


def test_code_helper_functions_and_one_line_returns() -> None:
    answer = "def helper(x): return x * 2\n\ndef main(y):\n    returned = y\n    return helper(returned)  \n"
    assert covered("Write main.\n", answer, "code_return") == [
        "def helper(x):",
        "x * 2",
        "def main(y):",
        "helper(returned)",
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("    return (a +\n            b)\n", "(a +\n            b)"),  # parentheses
        ("    return [x\n        for x in y]\n", "[x\n        for x in y]"),  # brackets
        ("    return {1: a,\n            2: b}[k]\n", "{1: a,\n            2: b}[k]"),  # braces
        ("    return a + \\\n        b\n", "a + \\\n        b"),  # backslash continuation
        ("    return f(a, (b,\n        c))  # done\n", "f(a, (b,\n        c))  # done"),  # nested, comment kept as before
        ("    return g(a,\n", "g(a,"),  # unclosed at the end: the rest of the answer
    ],
)
def test_a_return_expression_over_several_lines_is_covered_entirely(answer: str, expected: str) -> None:
    assert covered("def f(a, b):\n", answer, "code_return") == ["def f(a, b):", expected]


def test_code_without_return_falls_back_to_the_answer() -> None:
    answer = "    print(x)\n    return\n"
    assert covered("def f(x):\n", answer, "code_return") == ["print(x)\n    return"]


def test_every_declared_rule_is_implemented() -> None:
    prompt, answer = "Q: pick\nAnswer:", " B\n    return 5\n"
    expected = {"numeric_answer": ["5"], "answer_letter": ["B"], "code_return": ["5"], "full": ["B\n    return 5"]}
    assert set(expected) == set(SPAN_RULES)
    for rule in SPAN_RULES:
        assert covered(prompt, answer, rule) == expected[rule]


@pytest.mark.parametrize(
    ("rule", "prompt", "answer", "needle"),
    [
        ("numeric_answer", "Q:", " no digits here", "numeric_answer"),
        ("numeric_answer", "Q:", " 5 and then #### none", "after the last '####'"),
        ("answer_letter", "Q?\nAnswer:", " Because it is", "answer_letter"),
        ("answer_letter", "Q?\n", " it is B", "'Answer:'"),
        ("full", "Q:", "  \n", "empty"),
        ("nonsense", "Q:", " 1", "numeric_answer, answer_letter, code_return, full"),
    ],
)
def test_rule_errors(rule: str, prompt: str, answer: str, needle: str) -> None:
    with pytest.raises(UserError) as info:
        span_char_ranges(rule, prompt, answer)
    message = str(info.value)
    assert needle in message and "\n" not in message


# ---- tokenizers ------------------------------------------------------------------------------


def build_local_tokenizer() -> Any:
    """A small BPE with BOS/EOS, a SentencePiece-like "▁" and one token per digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(prepend_scheme="first"),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    backend.decoder = decoders.Metaspace(prepend_scheme="first")
    corpus = [prompt + answer for prompt, answer, _, _ in CASES] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=list(string.printable)
    )
    backend.train_from_iterator(corpus, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def gpt2() -> Any:
    return load_gpt2_tokenizer()


@pytest.fixture(scope="module")
def local() -> Any:
    return build_local_tokenizer()


@pytest.fixture(params=["gpt2", "local"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def test_gpt2_tokenizer_has_gpt2_ids(gpt2: Any) -> None:
    assert gpt2("Hello world")["input_ids"] == [15496, 995]
    assert gpt2(" the")["input_ids"] == [262]
    assert gpt2.eos_token_id == 50256 and len(gpt2) == 50257


def test_tokenizers_split_numbers_differently(gpt2: Any, local: Any) -> None:
    # The point of testing both: one multi-digit token vs one token per digit.
    assert len(gpt2("123456", add_special_tokens=False)["input_ids"]) == 2
    digits = [t for t in local.tokenize("123456") if t.strip("▁")]
    assert digits == list("123456")


def no_space(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(("prompt", "answer", "rule", "expected"), CASES, ids=CASE_IDS)
def test_marked_tokens_decode_to_span(tokenizer: Any, prompt: str, answer: str, rule: str, expected: list[str]) -> None:
    encoded = encode_example(tokenizer, prompt, answer, rule=rule)
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert encoded.input_ids == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert encoded.prompt_len == len(prompt_ids)
    assert encode_prompt(tokenizer, prompt) == prompt_ids
    assert encoded.span_mask is not None and len(encoded.span_mask) == len(encoded.input_ids)
    marked = [token for token, mark in zip(encoded.input_ids, encoded.span_mask) if mark]
    assert no_space(tokenizer.decode(marked)) == no_space("".join(expected))
    # No whitespace-only token is marked, except the "▁" a SentencePiece-like tokenizer prepends to
    # the answer: its offsets point at the answer's first character.
    blank = [i for i, mark in enumerate(encoded.span_mask) if mark and not tokenizer.decode([encoded.input_ids[i]]).strip()]
    assert blank in ([], [encoded.prompt_len])
    assert not encoded.span_mask[-1]  # EOS has no characters


def test_gpt2_concatenation_is_lossless(gpt2: Any) -> None:
    encoded = encode_example(gpt2, HUMANEVAL_PROMPT, HUMANEVAL_ANSWER)
    assert gpt2.decode(encoded.input_ids[:-1]) == HUMANEVAL_PROMPT + HUMANEVAL_ANSWER
    assert encoded.span_mask is None


def test_local_adds_bos_to_prompt_only(local: Any) -> None:
    encoded = encode_example(local, "Q: best?\nAnswer:", " B", rule="answer_letter")
    assert encoded.input_ids[0] == local.bos_token_id
    assert encoded.input_ids.count(local.bos_token_id) == 1
    assert encoded.input_ids[-1] == local.eos_token_id
    assert encoded.span_mask is not None and encoded.span_mask[0] is False


def test_multi_token_number_marks_every_piece(tokenizer: Any) -> None:
    encoded = encode_example(tokenizer, "Q: count?\nA:", " #### 123456", rule="numeric_answer")
    assert encoded.span_mask is not None
    marked = [i for i, mark in enumerate(encoded.span_mask) if mark]
    assert len(marked) >= 2  # GPT-2: "123" "456"; local: one per digit
    assert marked == list(range(marked[0], marked[-1] + 1))  # contiguous
    assert all(i >= encoded.prompt_len for i in marked)


def test_code_signature_in_prompt_is_marked(tokenizer: Any) -> None:
    encoded = encode_example(tokenizer, HUMANEVAL_PROMPT, HUMANEVAL_ANSWER, rule="code_return")
    assert encoded.span_mask is not None
    in_prompt = [tok for tok, mark in zip(encoded.input_ids[: encoded.prompt_len], encoded.span_mask) if mark]
    assert no_space(tokenizer.decode(in_prompt)) == "defhas_close_elements(numbers:List[float],threshold:float)->bool:"


def test_no_eos_and_no_rule(tokenizer: Any) -> None:
    encoded = encode_example(tokenizer, "Q:", " 5", add_eos=False)
    assert encoded.span_mask is None
    assert tokenizer.eos_token_id not in encoded.input_ids
    assert encoded.input_ids == encode_prompt(tokenizer, "Q:") + tokenizer(" 5", add_special_tokens=False)["input_ids"]


def test_truncation_keeps_the_start(tokenizer: Any) -> None:
    prompt, answer = "Q: a long question about apples?\nA:", " 3 apples then 4.\n#### 7"
    whole = encode_example(tokenizer, prompt, answer, rule="numeric_answer")
    assert whole.span_mask is not None
    last_marked = max(i for i, mark in enumerate(whole.span_mask) if mark)
    cut = encode_example(tokenizer, prompt, answer, rule="numeric_answer", max_length=last_marked + 1)
    assert cut.input_ids == whole.input_ids[: last_marked + 1]
    assert cut.span_mask == whole.span_mask[: last_marked + 1]
    assert cut.prompt_len == whole.prompt_len
    with pytest.raises(UserError, match="max_length"):
        encode_example(tokenizer, prompt, answer, rule="numeric_answer", max_length=last_marked)
    short = encode_example(tokenizer, prompt, answer, max_length=2)
    assert short.input_ids == whole.input_ids[:2] and short.prompt_len == 2


def test_slow_tokenizer_is_refused_for_spans() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(UserError, match="fast tokenizer"):
        encode_example(Slow(), "Q:", " 5", rule="numeric_answer")
