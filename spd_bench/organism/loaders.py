"""Loaders that serve the synthetic suite to tasks and training sources (tasks/synth.yaml).

Options in the YAML pick the family, the out-of-domain variant, the sizes and the suite seed.
The suite seed is fixed in the task definitions rather than taken from the run's seed, so every
method and seed is evaluated on the same items, as with a real benchmark.
"""

from __future__ import annotations

from typing import Any

from spd_bench.errors import UserError
from spd_bench.organism import suite
from spd_bench.tasks import DataContext, LoadedData, LoadedSource, SourceSpec, TaskSpec


def _family(name: str, options: dict[str, Any]) -> str:
    family = options.get("family")
    if family not in suite.FAMILIES:
        raise UserError(f"{name}: options.family is {family!r}; set it to one of {', '.join(suite.FAMILIES)}")
    return family


def _count(name: str, options: dict[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name}: options.{key} is {value!r}; set it to a positive whole number")
    return value


def _seed(name: str, options: dict[str, Any]) -> int:
    value = options.get("seed", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name}: options.seed is {value!r}; set it to a whole number")
    return value


def eval_set(task: TaskSpec, ctx: DataContext) -> LoadedData:
    """The fixed evaluation items of one family (options: family, ood, n, seed)."""
    family = _family(task.name, task.options)
    n = _count(task.name, task.options, "n", 500)
    seed = _seed(task.name, task.options)
    ood = bool(task.options.get("ood", False))
    return LoadedData(
        items=suite.items(family, "eval", n, seed=seed, ood=ood),
        layer="synthetic",
        details={"family": family, "ood": ood, "n": n, "suite_seed": seed},
    )


def training_source(source: SourceSpec, ctx: DataContext) -> LoadedSource:
    """Training prompts and labelled calibration examples (options: family, n_train, n_calibration, seed)."""
    family = _family(source.name, source.options)
    n_train = _count(source.name, source.options, "n_train", 500)
    n_calibration = _count(source.name, source.options, "n_calibration", 50)
    seed = _seed(source.name, source.options)
    return LoadedSource(
        train=suite.items(family, "train", n_train, seed=seed),
        calibration=suite.items(family, "calibration", n_calibration, seed=seed),
        layer="synthetic",
        details={"family": family, "n_train": n_train, "n_calibration": n_calibration, "suite_seed": seed},
    )
