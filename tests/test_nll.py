"""Reference NLL scoring against a direct, unbatched computation on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spd_bench.backends import BASE
from spd_bench.backends.hf import HFBackend
from spd_bench.errors import UserError
from spd_bench.models import load_model
from spd_bench.scoring import ScoreSettings, get_scorer
from spd_bench.spans import encode_example
from spd_bench.tasks import get_task

ITEMS = [
    {"id": "a", "prompt": "Q: Ann has 12 apples. She buys 7 more. How many apples? A:", "answer": " 12 + 7 = 19. #### 19"},
    {"id": "b", "prompt": "def f(x):\n", "answer": "    return abs(max(x, 2)) - 8"},
    {"id": "c", "prompt": "Question: What is 7 + 19?\nA. 31\nB. 26\nAnswer:", "answer": " B"},
    {"id": "d", "prompt": "The quick brown fox", "answer": " jumps over the lazy dog 0123456789 ()[]{}"},
]


@pytest.fixture(scope="module")
def tiny(model_cache: Path):
    return load_model("tiny-llama", model_cache, "cpu", "float32")


@pytest.fixture(scope="module")
def backend(tiny) -> HFBackend:
    return HFBackend.from_loaded(tiny)


def _direct_nll(model, tokenizer, prompt: str, answer: str) -> tuple[float, int]:
    """One unpadded forward pass; sum -log p(answer token | everything before it)."""
    encoded = encode_example(tokenizer, prompt, answer, add_eos=False)
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    total = 0.0
    positions = range(encoded.prompt_len, len(encoded.input_ids))
    for position in positions:
        total -= float(logprobs[position - 1, encoded.input_ids[position]])
    return total / len(positions), len(positions)


def test_batched_nll_equals_the_direct_computation(tiny, backend, tmp_path: Path):
    task = get_task("codealpaca")
    settings = ScoreSettings(batch_size=3, work_dir=tmp_path)  # 4 items of different lengths: padding in a batch
    output = get_scorer(task.scorer).score_model(backend, BASE, task, ITEMS, settings)
    assert output.primary_metric == "nll" and output.higher_is_better is False
    expected = [_direct_nll(tiny.model, tiny.tokenizer, item["prompt"], item["answer"]) for item in ITEMS]
    for row, item, (nll, n_tokens) in zip(output.per_item, ITEMS, expected):
        assert row["id"] == item["id"] and row["n_tokens"] == n_tokens
        assert row["score"] == pytest.approx(nll, rel=1e-4)
    assert output.metrics["nll"] == pytest.approx(sum(n for n, _ in expected) / len(expected), rel=1e-4)
    # a random model is near-uniform over its vocabulary: the NLL is close to log(vocab size)
    assert 0.5 * math.log(len(tiny.tokenizer)) < output.metrics["nll"] < 2 * math.log(len(tiny.tokenizer))


def test_batch_size_does_not_change_scores(tiny, backend, tmp_path: Path):
    task = get_task("codealpaca")
    one = get_scorer("nll").score_model(backend, BASE, task, ITEMS, ScoreSettings(batch_size=1, work_dir=tmp_path))
    all_ = get_scorer("nll").score_model(backend, BASE, task, ITEMS, ScoreSettings(batch_size=8, work_dir=tmp_path))
    assert [r["score"] for r in one.per_item] == pytest.approx([r["score"] for r in all_.per_item], rel=1e-5)


def test_a_better_answer_scores_lower_after_the_model_learns_it(tiny, backend, tmp_path: Path):
    """The metric moves the right way: a few gradient steps on one answer lower its NLL only."""
    import copy

    model = copy.deepcopy(tiny.model)
    encoded = encode_example(tiny.tokenizer, ITEMS[1]["prompt"], ITEMS[1]["answer"], add_eos=False)
    ids = torch.tensor([encoded.input_ids])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    task = get_task("codealpaca")
    before = get_scorer("nll").score_model(backend, BASE, task, ITEMS, ScoreSettings(work_dir=tmp_path))
    after = get_scorer("nll").score_model(HFBackend(model, tiny.tokenizer), BASE, task, ITEMS, ScoreSettings(work_dir=tmp_path))
    assert after.per_item[1]["score"] < 0.5 * before.per_item[1]["score"]


def test_empty_answers_and_stored_responses_are_user_errors(tiny, backend, tmp_path: Path):
    task = get_task("codealpaca")
    with pytest.raises(UserError, match="reference answer is empty"):
        get_scorer("nll").score_model(backend, BASE, task, [{"id": "x", "prompt": "p", "answer": ""}],
                                      ScoreSettings(work_dir=tmp_path))
    with pytest.raises(UserError, match="stored responses"):
        get_scorer("nll").score_responses(task, ITEMS, {"a": ["r"]}, ScoreSettings(work_dir=tmp_path))
