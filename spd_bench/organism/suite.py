"""The synthetic task suite: math word problems, small Python functions, multiple choice.

Every problem is drawn from a seeded ``random.Random``, so a (seed, family, split) always gives
the same items. Evaluation items never appear in training or calibration *by construction*: a
problem's canonical form (its arithmetic, its function body, its question and options - not
its wording) is hashed into one of ten buckets; bucket 0 is evaluation only, bucket 1
calibration only, and training prompts and pretraining documents come from buckets 2-9.

Each family has an in-domain variant (what the organism is pretrained on) and an out-of-domain
variant that the organism never sees in pretraining:
- math: "Q: ...\\nA:" -> " 12 + 7 = 19. 19 - 3 = 16. #### 16"; OOD: one more step (up to four,
  where pretraining has at most three) with unseen names.
- code: ``def f(x):`` plus a docstring -> a one-line ``return`` body (int, list and string
  chains, conditionals); OOD: four chained integer operations, or integer operations after a
  reduction that pretraining only shows on its own (a list's largest item, a string's length).
- mc: which of four listed numbers has a property, scored by option-text likelihood;
  OOD: two properties at once ("Which even number is the largest?").
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

FAMILIES = ("math", "code", "mc")
N_BUCKETS = 10
EVAL_BUCKET = 0
CALIBRATION_BUCKET = 1
SPLITS = ("eval", "calibration", "train")


@dataclass(frozen=True)
class Problem:
    """One generated problem with its correct reference completion."""

    family: str
    ood: bool
    key: str  # canonical form: decides the bucket, identical for differently worded copies
    prompt: str
    answer: str
    label: str | None
    fields: dict[str, Any] = field(default_factory=dict)  # kind-specific item fields
    oracle: Callable[..., Any] | None = None  # code only: the function's meaning, independent of its text
    wrong: Callable[[random.Random], str] | None = None  # a plausible wrong completion (pretraining noise)


def bucket(key: str) -> int:
    """Stable bucket of a canonical problem (sha256, not Python's salted hash)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % N_BUCKETS


def split_of(key: str) -> str:
    """Which split a canonical problem belongs to: eval, calibration or train."""
    b = bucket(key)
    return "eval" if b == EVAL_BUCKET else "calibration" if b == CALIBRATION_BUCKET else "train"


# ---------------------------------------------------------------- math

_NAMES = [("Ann", "she"), ("Ben", "he"), ("Cara", "she"), ("Dan", "he"), ("Eva", "she"), ("Finn", "he"),
          ("Hana", "she"), ("Ivo", "he"), ("Jill", "she"), ("Kai", "he"), ("Lena", "she"), ("Omar", "he")]
# Out of domain: one more step than pretraining ever shows, told about unseen names. (Unseen
# sentence frames were tried too: an unseen closing question alone dropped the organism from
# about 30% to 3-11% on 2-3 step problems, a collapse that would measure nothing.)
_OOD_NAMES = [("Rosa", "she"), ("Tom", "he"), ("Uma", "she"), ("Vic", "he")]
_ITEMS = ["apples", "pens", "coins", "books", "cards", "stamps", "shells", "marbles", "cookies", "stickers"]
_MATH_TEMPLATES = {
    "start": ["{N} has {a} {I}.", "{N} owns {a} {I}."],
    "+": ["{P} buys {b} more.", "{P} finds {b} more."],
    "-": ["{P} gives away {b}.", "{P} loses {b}."],
    "*": ["{P} ends up with {b} times as many."],
    "/": ["{P} splits them into {b} equal piles and keeps one pile."],
    "question": ["How many {I} does {p} have now?"],
}

_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


@dataclass(frozen=True)
class MathTier:
    """Number ranges of one difficulty level: start value, operands, factors, largest multiplicand."""

    start: tuple[int, int]
    operand: tuple[int, int]
    factor: tuple[int, int]
    multiply_up_to: int


# Each problem draws its tier, so accuracy is a blend of easy problems the organism masters,
# medium ones it half-learns and hard ones it mostly fails: a blend lands in a useful band
# far more reliably than tuning one difficulty to the training budget.
MATH_TIERS = (
    MathTier(start=(2, 20), operand=(1, 9), factor=(2, 3), multiply_up_to=20),
    MathTier(start=(2, 60), operand=(2, 30), factor=(2, 4), multiply_up_to=40),
    MathTier(start=(2, 99), operand=(2, 59), factor=(2, 5), multiply_up_to=99),
)


def _math_step(rng: random.Random, value: int, tier: MathTier) -> tuple[str, int]:
    """One operation that keeps every value a whole number between 0 and 999."""
    factors = range(tier.factor[0], tier.factor[1] + 1)
    options: list[tuple[str, float]] = [("+", 3.0)]
    if value >= 3:
        options.append(("-", 3.0))
    if 2 <= value <= tier.multiply_up_to:
        options.append(("*", 1.5))
    if any(value % k == 0 and value >= 2 * k for k in factors):
        options.append(("/", 1.0))
    op = rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]
    if op == "+":
        return op, rng.randint(*tier.operand)
    if op == "-":
        return op, rng.randint(1, min(value - 1, tier.operand[1]))
    if op == "*":
        return op, rng.randint(*tier.factor)
    return op, rng.choice([k for k in factors if value % k == 0 and value >= 2 * k])


def _worked(start: int, ops: list[tuple[str, int]]) -> tuple[str, int]:
    """The worked solution " a op b = c. ... #### n" for a chain of operations."""
    value, parts = start, []
    for op, b in ops:
        result = _APPLY[op](value, b)
        parts.append(f"{value} {op} {b} = {result}.")
        value = result
    return " " + " ".join(parts) + f" #### {value}", value


def _math(rng: random.Random, ood: bool) -> Problem:
    n_ops = rng.randint(1, 3) + (1 if ood else 0)
    tier = rng.choice(MATH_TIERS)
    start = rng.randint(*tier.start)
    ops, value = [], start
    for _ in range(n_ops):
        op, b = _math_step(rng, value, tier)
        ops.append((op, b))
        value = _APPLY[op](value, b)
    name, pronoun = rng.choice(_OOD_NAMES if ood else _NAMES)
    item = rng.choice(_ITEMS)
    fill = {"N": name, "P": pronoun.capitalize(), "p": pronoun, "I": item}
    sentences = [rng.choice(_MATH_TEMPLATES["start"]).format(a=start, **fill)]
    sentences += [rng.choice(_MATH_TEMPLATES[op]).format(b=b, **fill) for op, b in ops]
    sentences.append(rng.choice(_MATH_TEMPLATES["question"]).format(**fill))
    answer, final = _worked(start, ops)

    def wrong(noise: random.Random) -> str:
        # An arithmetic slip in one step, carried through the rest of the chain.
        at = noise.randrange(len(ops))
        value, parts = start, []
        for index, (op, b) in enumerate(ops):
            result = _APPLY[op](value, b)
            if index == at:
                result = max(0, result + noise.choice([-1, 1]) * noise.randint(1, 10))
                if result == _APPLY[op](value, b):
                    result += 1
            parts.append(f"{value} {op} {b} = {result}.")
            value = result
        return " " + " ".join(parts) + f" #### {value}"

    key = "math|" + str(start) + "|" + "|".join(f"{op}{b}" for op, b in ops)
    return Problem("math", ood, key, "Q: " + " ".join(sentences) + "\nA:", answer, str(final), wrong=wrong)


# ---------------------------------------------------------------- code
# An expression is built by applying operations to the argument, one after another. Each
# operation has a docstring phrase, a rendering (with Python's precedence, so parentheses
# appear only where needed) and its meaning as a Python function, kept apart from the text.

_PREC_ATOM, _PREC_POW, _PREC_UNARY, _PREC_MUL, _PREC_ADD = 20, 13, 12, 11, 10


@dataclass(frozen=True)
class _Op:
    phrase: str
    render: Callable[[str, int], tuple[str, int]]  # (code, precedence) -> (code, precedence)
    meaning: Callable[[Any], Any]
    kind_out: str  # "int" | "list" | "str"


def _wrap(code: str, prec: int, need: int) -> str:
    return code if prec >= need else f"({code})"


def _binop(symbol: str, k: int, prec: int) -> Callable[[str, int], tuple[str, int]]:
    return lambda code, p: (f"{_wrap(code, p, prec)} {symbol} {k}", prec)


def _int_ops(k_small: int, k: int) -> list[_Op]:
    """Integer operations with constants ``k`` (1-9) and ``k_small`` (2-5)."""
    return [
        _Op(f"plus {k}", _binop("+", k, _PREC_ADD), lambda v: v + k, "int"),
        _Op(f"minus {k}", _binop("-", k, _PREC_ADD), lambda v: v - k, "int"),
        _Op(f"times {k_small}", _binop("*", k_small, _PREC_MUL), lambda v: v * k_small, "int"),
        _Op(f"integer-divided by {k_small}", _binop("//", k_small, _PREC_MUL), lambda v: v // k_small, "int"),
        _Op(f"modulo {k_small}", _binop("%", k_small, _PREC_MUL), lambda v: v % k_small, "int"),
        _Op("negated", lambda c, p: (f"-{_wrap(c, p, _PREC_UNARY)}", _PREC_UNARY), lambda v: -v, "int"),
        _Op("made absolute", lambda c, p: (f"abs({c})", _PREC_ATOM), abs, "int"),
        _Op("squared", lambda c, p: (f"{_wrap(c, p, _PREC_ATOM)} ** 2", _PREC_POW), lambda v: v**2, "int"),
        _Op(f"at least {k}", lambda c, p: (f"max({c}, {k})", _PREC_ATOM), lambda v: max(v, k), "int"),
        _Op(f"at most {k}", lambda c, p: (f"min({c}, {k})", _PREC_ATOM), lambda v: min(v, k), "int"),
    ]


def _list_ops(k: int, k_small: int) -> tuple[list[_Op], list[_Op]]:
    """(list -> list, list -> int) operations; the second list is safe on any non-empty list."""
    to_list = [
        _Op("sorted", lambda c, p: (f"sorted({c})", _PREC_ATOM), sorted, "list"),
        _Op("reversed", lambda c, p: (f"{_wrap(c, p, _PREC_ATOM)}[::-1]", _PREC_ATOM), lambda v: v[::-1], "list"),
        _Op(f"with {k} added to each item", lambda c, p: (f"[v + {k} for v in {_wrap(c, p, _PREC_ATOM)}]", _PREC_ATOM),
            lambda v: [x + k for x in v], "list"),
        _Op(f"with each item times {k_small}", lambda c, p: (f"[v * {k_small} for v in {_wrap(c, p, _PREC_ATOM)}]", _PREC_ATOM),
            lambda v: [x * k_small for x in v], "list"),
        _Op(f"cut to the first {k_small} items", lambda c, p: (f"{_wrap(c, p, _PREC_ATOM)}[:{k_small}]", _PREC_ATOM),
            lambda v: v[:k_small], "list"),
    ]
    to_int = [
        _Op("summed", lambda c, p: (f"sum({c})", _PREC_ATOM), sum, "int"),
        _Op("reduced to its largest item", lambda c, p: (f"max({c})", _PREC_ATOM), max, "int"),
        _Op("reduced to its smallest item", lambda c, p: (f"min({c})", _PREC_ATOM), min, "int"),
        _Op("counted", lambda c, p: (f"len({c})", _PREC_ATOM), len, "int"),
        _Op("reduced to its first item", lambda c, p: (f"{_wrap(c, p, _PREC_ATOM)}[0]", _PREC_ATOM), lambda v: v[0], "int"),
        _Op("reduced to its last item", lambda c, p: (f"{_wrap(c, p, _PREC_ATOM)}[-1]", _PREC_ATOM), lambda v: v[-1], "int"),
        _Op(f"reduced to the number of items above {k}",
            lambda c, p: (f"len([v for v in {_wrap(c, p, _PREC_ATOM)} if v > {k}])", _PREC_ATOM),
            lambda v: len([x for x in v if x > k]), "int"),
    ]
    return to_list, to_int


_LETTERS = "abcde"


def _str_ops(c: str, d: str, k_small: int) -> tuple[list[_Op], list[_Op]]:
    """(str -> str, str -> int) operations on lower-case strings over ``_LETTERS``."""
    to_str = [
        _Op("in upper case", lambda s, p: (f"{_wrap(s, p, _PREC_ATOM)}.upper()", _PREC_ATOM), str.upper, "str"),
        _Op("reversed", lambda s, p: (f"{_wrap(s, p, _PREC_ATOM)}[::-1]", _PREC_ATOM), lambda v: v[::-1], "str"),
        _Op(f"with '{c}' replaced by '{d}'", lambda s, p: (f"{_wrap(s, p, _PREC_ATOM)}.replace('{c}', '{d}')", _PREC_ATOM),
            lambda v: v.replace(c, d), "str"),
        _Op(f"with '{c}' added at the end", lambda s, p: (f"{_wrap(s, p, _PREC_ADD)} + '{c}'", _PREC_ADD), lambda v: v + c, "str"),
        _Op(f"repeated {k_small} times", lambda s, p: (f"{_wrap(s, p, _PREC_MUL)} * {k_small}", _PREC_MUL),
            lambda v: v * k_small, "str"),
        _Op(f"cut to the first {k_small} characters", lambda s, p: (f"{_wrap(s, p, _PREC_ATOM)}[:{k_small}]", _PREC_ATOM),
            lambda v: v[:k_small], "str"),
    ]
    to_int = [
        _Op("counted", lambda s, p: (f"len({s})", _PREC_ATOM), len, "int"),
        _Op(f"reduced to the number of '{c}'", lambda s, p: (f"{_wrap(s, p, _PREC_ATOM)}.count('{c}')", _PREC_ATOM),
            lambda v: v.count(c), "int"),
    ]
    return to_str, to_int


Sampler = Callable[[random.Random], _Op]


def _random_int_op(rng: random.Random) -> _Op:
    return rng.choice(_int_ops(rng.randint(2, 5), rng.randint(1, 9)))


def _list_to_list(rng: random.Random) -> _Op:
    return rng.choice(_list_ops(rng.randint(1, 9), rng.randint(2, 5))[0])


def _list_to_int(rng: random.Random) -> _Op:
    return rng.choice(_list_ops(rng.randint(1, 9), rng.randint(2, 5))[1])


# Reductions that pretraining shows followed by integer operations; the others never are.
_COMPOSED_REDUCTIONS = ("summed", "counted")


def _list_composed_reduction(rng: random.Random) -> _Op:
    return rng.choice([op for op in _list_ops(1, 2)[1] if op.phrase in _COMPOSED_REDUCTIONS])


def _list_other_reduction(rng: random.Random) -> _Op:
    return rng.choice([op for op in _list_ops(rng.randint(1, 9), 2)[1] if op.phrase not in _COMPOSED_REDUCTIONS])


def _str_args(rng: random.Random) -> tuple[str, str, int]:
    c, d = rng.sample(_LETTERS, 2)
    return c, d, rng.randint(2, 4)


def _str_to_str(rng: random.Random) -> _Op:
    return rng.choice(_str_ops(*_str_args(rng))[0])


def _str_to_int(rng: random.Random) -> _Op:
    return rng.choice(_str_ops(*_str_args(rng))[1])


def _chain_samplers(rng: random.Random, arg: str, ood: bool) -> list[Sampler]:
    """Which kind of operation each step of one function is, in application order."""
    int_tail = [_random_int_op] * rng.randint(1, 2)
    if ood:
        # Longer or new compositions than pretraining shows: four integer operations (it has at
        # most three), or integer operations after a reduction it only shows on its own (a
        # list's largest/smallest/first/last item or count above k, a string's length or letters).
        if arg == "x":
            return [_random_int_op] * 4
        return [_list_other_reduction if arg == "xs" else _str_to_int] + int_tail
    if arg == "x":
        return [_random_int_op] * rng.randint(1, 3)
    if arg == "xs" and rng.random() < 0.4:
        return [_list_composed_reduction] + int_tail
    to_same, to_int = (_list_to_list, _list_to_int) if arg == "xs" else (_str_to_str, _str_to_int)
    samplers = [to_same] * rng.randint(0, 1)
    if not samplers or rng.random() < 0.5:
        samplers.append(to_int)
    return samplers


def _chain(ops: list[_Op], arg: str) -> tuple[str, str, Callable[[Any], Any]]:
    """(docstring, code, meaning) of applying ``ops`` to ``arg`` in order."""
    code, prec = arg, _PREC_ATOM
    for op in ops:
        code, prec = op.render(code, prec)

    def meaning(value: Any) -> Any:
        for op in ops:
            value = op.meaning(value)
        return value

    return f"Return {arg} " + ", then ".join(op.phrase for op in ops) + ".", code, meaning


_CONDITIONS = [
    ("x is even", "x % 2 == 0", lambda x, k: x % 2 == 0),
    ("x is odd", "x % 2 == 1", lambda x, k: x % 2 == 1),
    ("x is positive", "x > 0", lambda x, k: x > 0),
    ("x is above {k}", "x > {k}", lambda x, k: x > k),
    ("x is below {k}", "x < {k}", lambda x, k: x < k),
]


def _conditional(condition: int, k: int, then_op: _Op, else_op: _Op) -> tuple[str, str, Callable[[Any], Any]]:
    """(docstring, code, meaning) of ``then if test else other`` on ``x``."""
    text, test, check = _CONDITIONS[condition]
    then_code, _ = then_op.render("x", _PREC_ATOM)
    else_code, _ = else_op.render("x", _PREC_ATOM)
    doc = f"Return x {then_op.phrase} if {text.format(k=k)}, else x {else_op.phrase}."
    code = f"{then_code} if {test.format(k=k)} else {else_code}"

    def meaning(x: int) -> Any:
        return then_op.meaning(x) if check(x, k) else else_op.meaning(x)

    return doc, code, meaning


def _inputs(arg: str, rng: random.Random, n: int) -> list[list[Any]]:
    """``n`` argument lists for a function of ``arg`` (x: int, xs: non-empty int list, s: str)."""
    if arg == "x":
        fixed = [[0], [-7], [4], [13]]
        return (fixed + [[rng.randint(-20, 20)] for _ in range(n)])[:n]
    if arg == "xs":
        return [[[rng.randint(-9, 20) for _ in range(rng.randint(1, 6))]] for _ in range(n)]
    return [["".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 8)))] for _ in range(n)]


def _code(rng: random.Random, ood: bool) -> Problem:
    if ood:
        arg = rng.choice(["x", "xs", "s"])
    else:
        arg = rng.choices(["x", "xs", "s", "cond"], weights=[4, 2, 2, 2])[0]
    conditional = arg == "cond"
    if conditional:
        arg = "x"
        samplers: list[Sampler] = [_random_int_op, _random_int_op]
        condition, k = rng.randrange(len(_CONDITIONS)), rng.randint(-5, 9)
    else:
        samplers = _chain_samplers(rng, arg, ood)

    def build(ops: list[_Op]) -> tuple[str, str, Callable[[Any], Any]]:
        return _conditional(condition, k, *ops) if conditional else _chain(ops, arg)

    ops = [sample(rng) for sample in samplers]
    doc, code, meaning = build(ops)
    prompt = f'def f({arg}):\n    """{doc}"""\n'
    body = f"    return {code}\n"
    key = f"code|{arg}|{code}"
    fields = {"entry_point": "f", "canonical_solution": body, "atol": 0, "contract": ""}

    def wrong(noise: random.Random) -> str:
        # One operation swapped for another of the same kind: a plausible slip.
        for _ in range(20):
            at = noise.randrange(len(ops))
            slipped = ops[:at] + [samplers[at](noise)] + ops[at + 1 :]
            other = build(slipped)[1]
            if other != code:
                return f"    return {other}\n"
        return f"    return {arg}\n"

    return Problem("code", ood, key, prompt, body, None, fields=fields, oracle=meaning, wrong=wrong)


# ---------------------------------------------------------------- multiple choice

_MC_QUESTIONS = ["largest", "smallest", "even", "odd", "closest", "between"]


def _distinct(rng: random.Random, n: int, lo: int = 10, hi: int = 99, accept: Callable[[int], bool] | None = None) -> list[int]:
    pool = [v for v in range(lo, hi + 1) if accept is None or accept(v)]
    return rng.sample(pool, n)


def _mc_in(rng: random.Random) -> tuple[str, list[int], int, str]:
    """(question, options, gold value, canonical question) for a number-property question."""
    kind = rng.choice(_MC_QUESTIONS)
    if kind in ("largest", "smallest"):
        options = _distinct(rng, 4)
        gold = max(options) if kind == "largest" else min(options)
        return f"Which number is the {kind}?", options, gold, kind
    if kind in ("even", "odd"):
        parity = 0 if kind == "even" else 1
        gold = _distinct(rng, 1, accept=lambda v: v % 2 == parity)[0]
        options = [gold] + _distinct(rng, 3, accept=lambda v: v % 2 != parity)
        return f"Which number is {kind}?", options, gold, kind
    if kind == "closest":
        target = rng.randint(20, 80)
        while True:
            options = _distinct(rng, 4)
            distances = sorted(abs(v - target) for v in options)
            if distances[0] < distances[1]:
                break
        gold = min(options, key=lambda v: abs(v - target))
        return f"Which number is closest to {target}?", options, gold, f"closest{target}"
    lo = rng.randint(10, 70)
    hi = lo + rng.randint(10, 20)
    gold = _distinct(rng, 1, lo=lo + 1, hi=hi - 1)[0]
    options = [gold] + _distinct(rng, 3, accept=lambda v: not lo <= v <= hi)
    return f"Which number is between {lo} and {hi}?", options, gold, f"between{lo},{hi}"


def _mc_ood(rng: random.Random) -> tuple[str, list[int], int, str]:
    """(question, options, gold value, canonical question) combining a parity and an extreme.

    Two options have the asked parity and two do not, so applying only one of the conditions
    is right about half the time: partial skill, with room to learn the composition.
    """
    parity = rng.choice(["even", "odd"])
    extreme = rng.choice(["largest", "smallest"])
    want = 0 if parity == "even" else 1
    matching = _distinct(rng, 2, accept=lambda v: v % 2 == want)
    other = _distinct(rng, 2, accept=lambda v: v % 2 != want)
    gold = max(matching) if extreme == "largest" else min(matching)
    return f"Which {parity} number is the {extreme}?", matching + other, gold, f"{parity}-{extreme}"


def _mc(rng: random.Random, ood: bool) -> Problem:
    question, options, gold_value, canonical = (_mc_ood if ood else _mc_in)(rng)
    rng.shuffle(options)
    choices = [str(v) for v in options]
    gold = options.index(gold_value)
    prompt = f"Question: {question}\nOptions: {', '.join(choices)}\nAnswer:"
    key = f"mc|{canonical}|" + ",".join(sorted(choices))

    def wrong(noise: random.Random) -> str:
        return " " + noise.choice([c for i, c in enumerate(choices) if i != gold])

    return Problem("mc", ood, key, prompt, " " + choices[gold], choices[gold],
                   fields={"choices": choices, "gold": gold}, wrong=wrong)


_GENERATORS: dict[str, Callable[[random.Random, bool], Problem]] = {"math": _math, "code": _code, "mc": _mc}


# ---------------------------------------------------------------- splits and items


def generate(family: str, rng: random.Random, ood: bool = False) -> Problem:
    """One random problem of ``family`` (any split; callers filter by bucket)."""
    if family not in _GENERATORS:
        raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")
    return _GENERATORS[family](rng, ood)


def problems(family: str, split: str, n: int, *, seed: int = 0, ood: bool = False) -> list[Problem]:
    """``n`` distinct problems of one split, always the same for the same arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return list(_problems(family, split, n, seed, ood))


@functools.lru_cache(maxsize=64)
def _problems(family: str, split: str, n: int, seed: int, ood: bool) -> tuple[Problem, ...]:
    """Cached: loaders and checks ask for the same sets repeatedly."""
    rng = random.Random(f"{seed}|{family}|{'ood' if ood else 'in'}|{split}")
    found: dict[str, Problem] = {}
    attempts = 0
    while len(found) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"could not find {n} distinct {family} {split} problems")
        problem = generate(family, rng, ood)
        if problem.key not in found and split_of(problem.key) == split:
            found[problem.key] = problem
    return tuple(found.values())


def to_item(problem: Problem, item_id: str) -> dict[str, Any]:
    """The shared item schema (spd_bench.tasks); code items are also EvalPlus problems."""
    item = {"id": item_id, "prompt": problem.prompt, "answer": problem.answer, "label": problem.label}
    item.update(problem.fields)
    if problem.family == "code":
        # Test inputs follow from the canonical problem alone (drawn only for kept problems).
        arg = problem.key.split("|")[1]
        inputs_rng = random.Random(problem.key)
        item.update(task_id=item_id, base_input=_inputs(arg, inputs_rng, 5), plus_input=_inputs(arg, inputs_rng, 10))
    return item


def items(family: str, split: str, n: int, *, seed: int = 0, ood: bool = False) -> list[dict[str, Any]]:
    """``n`` items of one split with ids like ``math_ood-eval-00003``."""
    name = f"{family}_ood" if ood else family
    return [to_item(p, f"{name}-{split}-{i:05d}") for i, p in enumerate(problems(family, split, n, seed=seed, ood=ood))]


def pretraining_documents(seed: int, p_wrong: float, weights: dict[str, float]) -> Iterator[tuple[str, str]]:
    """Endless (prompt, completion) pairs from the training buckets of the in-domain families.

    A fraction ``p_wrong`` of completions is deliberately wrong, so that the organism learns an
    imperfect policy and self-distillation has something to fix.
    """
    rng = random.Random(f"{seed}|pretrain")
    noise = random.Random(f"{seed}|pretrain-noise")
    families = list(weights)
    while True:
        family = rng.choices(families, weights=[weights[f] for f in families])[0]
        problem = generate(family, rng)
        if split_of(problem.key) != "train":
            continue
        if noise.random() < p_wrong and problem.wrong is not None:
            yield problem.prompt, problem.wrong(noise)
        else:
            yield problem.prompt, problem.answer
