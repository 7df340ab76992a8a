"""Build the organism once per cache: tokenizer, pretraining, a quick accuracy check, provenance.

The folder name is a hash of the build config, ``BUILD_VERSION`` and the source of the modules
that determine the weights, so a changed recipe builds a new organism instead of reusing a
stale one. A build is written to a temporary
folder and renamed into place, so an interrupted build leaves nothing half-made behind.

The accuracy recorded in ``provenance.json`` is this module's own quick check (greedy exact
match for math, executing the code on its base inputs for code, option likelihood for multiple
choice); the benchmark's scores come from lm-eval and EvalPlus.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from spd_bench.config import stable_hash
from spd_bench.organism import suite
from spd_bench.organism.pretrain import ModelShape, PretrainConfig, make_model, pretrain

BUILD_VERSION = 1
SMOKE_STEPS = 5

# Evaluation sets checked after pretraining: task name -> (family, out of domain, items).
CHECKS = {
    "synth_math": ("math", False, 500),
    "synth_code": ("code", False, 500),
    "synth_mc": ("mc", False, 500),
    "synth_math_ood": ("math", True, 300),
    "synth_code_ood": ("code", True, 300),
    "synth_mc_ood": ("mc", True, 300),
}
_MAX_NEW_TOKENS = {"math": 96, "code": 64}
_STOP = {"math": ["\n"], "code": ["\n\n", "\ndef "]}
_FINAL = re.compile(r"#### (\d+)")
_CHECK_MEMORY_MB = 1024  # per sandboxed process of the code check


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    shape: ModelShape = field(default_factory=ModelShape)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    vocab_size: int = 800
    tokenizer_documents: int = 5000
    suite_seed: int = 0  # the evaluation sets checked are the tasks' own (tasks/synth.yaml)
    check_limit: int | None = None  # fewer check items (smoke builds only)


def _recipe_sources() -> str:
    """Hash of the code that determines the weights, so editing it never reuses a stale build."""
    from spd_bench.organism import pretrain as pretrain_module, tokenizer as tokenizer_module

    digest = hashlib.sha256()
    for module in (suite, pretrain_module, tokenizer_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def build_key(cfg: BuildConfig) -> str:
    return stable_hash({"build_version": BUILD_VERSION, "config": asdict(cfg), "sources": _recipe_sources()})


def built_organism(cache_dir: Path) -> Path | None:
    """The default organism's folder when it is built already, else None (nothing is built)."""
    final = Path(cache_dir) / "models" / f"organism-{build_key(BuildConfig())}"
    return final if (final / "provenance.json").exists() else None


def organism_dir(cache_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The folder of the default organism, built on first use and reused afterwards."""
    return build_organism(cache_dir, progress=progress)


def build_organism(
    cache_dir: Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    smoke: bool = False,
    from_scratch: bool = False,
) -> Path:
    """Build (or reuse) an organism; ``smoke`` means a few steps and a small check, for tests.

    The default organism comes from the weights shipped in the package when they are of the
    current recipe and intact (organism/shipped.py); ``from_scratch`` pretrains regardless.
    """
    cfg = BuildConfig(seed=seed)
    if smoke:
        cfg = replace(cfg, pretrain=replace(cfg.pretrain, steps=steps or SMOKE_STEPS, log_every=1), check_limit=8)
    elif steps is not None:
        cfg = replace(cfg, pretrain=replace(cfg.pretrain, steps=steps))
    final = Path(cache_dir) / "models" / f"organism-{build_key(cfg)}"
    say = progress or (lambda message: None)
    from spd_bench.organism.shipped import copy_shipped, usable_shipped
    from spd_bench.store import publish_verified_folder

    def build(folder: Path) -> None:
        if cfg == BuildConfig() and not from_scratch:
            shipped, why_not = usable_shipped(build_key(cfg))
            if shipped is not None:
                copy_shipped(shipped, folder)
                return
            say(f"building from scratch: {why_not}")
        _build_into(folder, cfg, say)

    # verified against its manifest on every use: changed weights are rebuilt, never served
    return publish_verified_folder(final, build, what="model organism", notice=say)


def _build_into(folder: Path, cfg: BuildConfig, progress: Callable[[str], None]) -> None:
    import torch
    import transformers

    from spd_bench.models import load_tokenizer
    from spd_bench.organism.tokenizer import train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.pretrain.threads)
    try:
        started = time.perf_counter()
        docs = suite.pretraining_documents(cfg.seed, 0.0, cfg.pretrain.mix)
        train_tokenizer((prompt + answer for prompt, answer in (next(docs) for _ in range(cfg.tokenizer_documents))),
                        folder, cfg.vocab_size)
        tokenizer = load_tokenizer(folder)
        model = make_model(cfg.shape, tokenizer, cfg.seed)
        progress(f"pretraining the organism ({sum(p.numel() for p in model.parameters()):,} parameters,"
                 f" {cfg.pretrain.steps} steps)")
        pretrain_started = time.perf_counter()
        curve = pretrain(model, tokenizer, cfg.pretrain, cfg.seed, progress)
        pretrain_s = time.perf_counter() - pretrain_started
        model.save_pretrained(folder)
        check_started = time.perf_counter()
        accuracy = {}
        for task, (family, ood, n) in CHECKS.items():
            items = suite.items(family, "eval", n, seed=cfg.suite_seed, ood=ood)[: cfg.check_limit]
            accuracy[task] = round(check_accuracy(model, tokenizer, family, items), 4)
            progress(f"{task}: {accuracy[task]:.1%} of {len(items)} items")
        provenance = {
            "build_version": BUILD_VERSION,
            "key": build_key(cfg),
            "seed": cfg.seed,
            "steps": cfg.pretrain.steps,
            "config": asdict(cfg),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "loss_curve": curve,
            "accuracy": accuracy,
            "accuracy_check": "greedy '#### n' exact match (math), base inputs executed against the canonical"
            " solution (code), highest summed option log-likelihood (mc)",
            "wall_time_s": {
                "pretrain": round(pretrain_s, 1),
                "check": round(time.perf_counter() - check_started, 1),
                "total": round(time.perf_counter() - started, 1),
            },
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "threads": cfg.pretrain.threads,
        }
        (folder / "provenance.json").write_text(json.dumps(provenance, indent=1))
    finally:
        torch.set_num_threads(threads)


def check_accuracy(model: Any, tokenizer: Any, family: str, items: list[dict[str, Any]]) -> float:
    """Share of ``items`` the model gets right by the quick check for its family (through the backend)."""
    if not items:
        return 0.0
    from spd_bench.backends import BASE, GenerationPlan
    from spd_bench.backends.hf import HFBackend

    backend = HFBackend(model, tokenizer)
    if family == "mc":
        return sum(_mc_choice(backend, item) == item["gold"] for item in items) / len(items)
    plan = GenerationPlan(max_new_tokens=_MAX_NEW_TOKENS[family], batch_size=64, stop=tuple(_STOP[family]))
    completions = [texts[0] for texts in backend.generate(BASE, [item["prompt"] for item in items], plan)]
    if family == "math":
        found = [_FINAL.search(text) for text in completions]
        return sum(m is not None and m.group(1) == item["label"] for m, item in zip(found, items)) / len(items)
    return sum(run_code_checks(items, completions)) / len(items)


def _mc_choice(backend: Any, item: dict[str, Any]) -> int:
    """Index of the option whose text (after a space) the model finds most likely."""
    from spd_bench.backends import BASE

    scores = [result.logprob for result in backend.loglikelihood(BASE, [(item["prompt"], " " + c) for c in item["choices"]])]
    return max(range(len(scores)), key=scores.__getitem__)


def run_code_checks(items: list[dict[str, Any]], bodies: list[str]) -> list[bool]:
    """Whether each body passes its problem's base inputs, judged by the scorer's own verdict.

    The generated code runs in the sandbox and only returns outputs, compared in the harness
    (spd_bench.scoring.code_check): one definition of "pass" for the organism's check, the
    execution filter and EvalPlus scoring. A body that crashes, exits or hangs fails alone.
    """
    from spd_bench.scoring.code_check import check_problems

    index: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    groups: list[list[str]] = []
    slots: list[tuple[int, int]] = []
    for item, body in zip(items, bodies, strict=True):
        key = str(item["id"])
        if key not in index:
            index[key] = len(problems)
            problems.append(item)
            groups.append([])
        slots.append((index[key], len(groups[index[key]])))
        groups[index[key]].append(body)
    with tempfile.TemporaryDirectory(prefix="organism-check-") as work:
        checks = check_problems(problems, groups, memory_mb=_CHECK_MEMORY_MB, workdir=Path(work))
    return [checks[problem].passed[sample] for problem, sample in slots]
