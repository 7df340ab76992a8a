"""``spd-bench sweep``: run a grid of option settings through the engine into ablation tables.

A ``--set FIELD=V1,V2`` with several values, or a ``sweep:`` mapping in the config file, is an
axis; the settings are their cartesian product (``grid``) or each axis varied alone around the
defaults (``one_at_a_time``). Every setting is an ordinary run on one shared cache, so a stage
an option does not change (base scores, samples for a post-sampling option) is computed once,
and an interrupted sweep resumes. Every setting's config and plan is checked before any model
work; references that ignore the swept options (base, raw_sd, spd_random) run once.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spd_bench.config import RunConfig, build_dataclass, deep_merge, make_config, stable_hash, to_dict
from spd_bench.engine.plan import Plan, make_plan
from spd_bench.errors import UserError
from spd_bench.leaderboard.ablation import (
    MANIFEST,
    MODES,
    REFERENCE_DIR,
    REFERENCE_METHODS,
    VERSUS,
    axis_label,
    axis_value,
    value_text,
)
from spd_bench.leaderboard.collect import SWEEPS_DIR
from spd_bench.store import atomic_write_json

DEFAULT_SETTING = "default"  # one_at_a_time: the setting with every axis at its default


@dataclass(frozen=True)
class SweepSpec:
    axes: dict[str, list[Any]]  # dotted config field -> values, in order
    mode: str = "grid"


@dataclass
class Setting:
    label: str  # its folder name
    overrides: dict[str, Any]  # axis -> value
    config: RunConfig
    plan: Plan


@dataclass
class SweepPlan:
    name: str
    folder: Path
    spec: SweepSpec
    methods: list[str]  # the swept methods
    settings: list[Setting]
    reference: Setting | None  # the methods that ignore the swept options, run once
    centers: dict[str, Any]  # each axis's value when the sweep does not set it
    same_as: dict[str, str]  # a setting left out -> the one that computes the same (run once)


def _axis_values(raw: str) -> list[Any]:
    """``0.25,0.5`` -> [0.25, 0.5]; ``[0,3],[5]`` -> [[0, 3], [5]]: the value read as a YAML flow list."""
    import yaml

    try:
        parsed = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        return [raw]  # not a list of several values: parse_set reads (and judges) it as one
    return parsed if isinstance(parsed, list) else [raw]


def split_sets(assignments: list[str]) -> tuple[list[str], dict[str, list[Any]]]:
    """``--set`` items -> (plain overrides for parse_set, axes): a value with several comma-separated
    items is an axis; a list value for a single setting is written in brackets, ``layers=[0,3]``."""
    plain: list[str] = []
    axes: dict[str, list[Any]] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        values = _axis_values(raw) if sep and key else []
        if len(values) > 1:
            axes[key] = values
        else:
            plain.append(item)
    return plain, axes


def spec_from_yaml(data: Any, origin: str) -> SweepSpec:
    """The ``sweep:`` mapping of a config file: ``mode`` and ``axes`` (field -> list of values)."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: 'sweep' must be a mapping with 'axes' (field: [values]) and optionally 'mode'")
    unknown = sorted(set(data) - {"axes", "mode"})
    if unknown:
        raise UserError(f"{origin}: unknown key sweep.{unknown[0]}; a sweep has 'axes' and 'mode'")
    axes = data.get("axes") or {}
    if not isinstance(axes, dict) or any(not isinstance(v, list) or not v for v in axes.values()):
        raise UserError(f"{origin}: sweep.axes must map each config field to a non-empty list of values,"
                        " e.g. method_options.spd.rank_fraction: [0.25, 0.5]")
    return SweepSpec({str(k): list(v) for k, v in axes.items()}, str(data.get("mode", "grid")))


def combine(from_file: SweepSpec | None, from_flags: dict[str, list[Any]], plain_fields: set[str],
            mode: str | None) -> SweepSpec:
    """The config file's axes, then the flags' (a flag replaces a file's axis of the same field, and a
    single-valued ``--set`` on a field makes it a plain override); ``mode`` from the flag, else the file."""
    axes = {k: v for k, v in (from_file.axes if from_file else {}).items() if k not in plain_fields}
    axes.update(from_flags)
    chosen = mode or (from_file.mode if from_file else "grid")
    if chosen not in MODES:
        raise UserError(f"sweep mode {chosen!r} is not one of {', '.join(MODES)}")
    if not axes:
        raise UserError("a sweep needs an axis: give --set FIELD=V1,V2 (several values) or a 'sweep: axes:' mapping"
                        " in the --config file (docs/ablations.md)")
    return SweepSpec(axes, chosen)


def _field_owner(axis: str) -> tuple[type, str] | None:
    """The dataclass that declares an axis's field (a config section, or a method's Options) and the
    field's name; None for a field inside a mapping or an unknown one (the setting's config judges it)."""
    parts = axis.split(".")
    owner: Any = RunConfig
    if parts[0] == "method_options" and len(parts) == 3:
        from spd_bench.registry import METHODS

        if parts[1] not in METHODS:
            return None
        owner, parts = METHODS.get(parts[1]).Options, parts[2:]
    for part in parts[:-1]:
        owner = typing.get_type_hints(owner).get(part) if dataclasses.is_dataclass(owner) else None
    if not dataclasses.is_dataclass(owner) or parts[-1] not in {f.name for f in dataclasses.fields(owner)}:
        return None
    return owner, parts[-1]


def coerce_axes(spec: SweepSpec) -> SweepSpec:
    """Each axis value read with its field's type, as ``--set`` is (``train.lr=1e-4,1e-3``: YAML reads
    strings, the field holds floats), repeats dropped: labels, manifest and order then see the run's values."""
    axes: dict[str, list[Any]] = {}
    for axis, values in spec.axes.items():
        owner = _field_owner(axis)
        prefix = axis.rpartition(".")[0] + "." if "." in axis else ""
        typed = values if owner is None else [getattr(build_dataclass(owner[0], {owner[1]: v}, prefix), owner[1])
                                             for v in values]
        axes[axis] = list({value_text(v): v for v in typed}.values())
    return SweepSpec(axes, spec.mode)


def _nested(path: str, value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {}
    parts = path.split(".")
    root = node
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return root


def _overrides(spec: SweepSpec) -> list[dict[str, Any]]:
    """The settings as axis -> value maps: the product of the axes, or the default then each axis alone."""
    names = list(spec.axes)
    if spec.mode == "grid":
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*spec.axes.values())]
    return [{}] + [{name: value} for name in names for value in spec.axes[name]]


def _label(overrides: dict[str, Any]) -> str:
    if not overrides:
        return DEFAULT_SETTING
    return ",".join(f"{axis_label(a)}={value_text(v)}" for a, v in overrides.items()).replace("/", "__")


def _identity(config: RunConfig, plan: Plan) -> str:
    """What a setting computes: its config, with every method's options resolved (defaults included)."""
    bare = dataclasses.replace(config, method_options={}).hash()
    return stable_hash([bare, {name: method.options_dict() for name, method in plan.methods.items()}])


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or name.startswith("."):
        raise UserError(f"sweep name {name!r}: give a plain folder name with --name, e.g. --name rank")
    return name


def plan_sweep(base_data: dict[str, Any], flags: dict[str, Any], spec: SweepSpec, name: str | None,
               reference: bool = True) -> SweepPlan:
    """Every setting's config and plan (and the references'), each checked before any model work."""
    spec = coerce_axes(spec)
    methods = list(flags.get("methods") or base_data.get("methods") or ["spd"])
    references = [m for m in REFERENCE_METHODS if m not in methods] if reference else []
    per_method = all(any(a.startswith(f"method_options.{m}.") for m in methods) for a in spec.axes)
    shared = references if per_method else []  # else raw_sd and the rest depend on the axes too: run them per setting
    setting_methods = methods if per_method else [*references, *methods]
    _check_option_owners(base_data, [*methods, *REFERENCE_METHODS])
    base = _config(base_data, flags, {}, setting_methods, None)
    sweep_name = _check_name(name or "+".join(axis_label(a).rsplit(".", 1)[-1] for a in spec.axes))
    folder = Path(base.output_dir) / SWEEPS_DIR / sweep_name
    # Every setting's fields and method options first (no model needed), then the plans (the model's shape).
    configs = [(_label(o), o, _config(base_data, flags, o, setting_methods, folder / _label(o))) for o in _overrides(spec)]
    if shared:
        configs.append((REFERENCE_DIR, {}, _config(base_data, flags, {}, shared, folder / REFERENCE_DIR)))
    for *_, config in configs:
        _check_methods(config)
    base_plan = make_plan(base)
    options = {m: method.options_dict() for m, method in base_plan.methods.items()}
    centers = {axis: axis_value(to_dict(base), options, axis) for axis in spec.axes}
    planned = [Setting(label, overrides, config, make_plan(config)) for label, overrides, config in configs]
    ref = planned.pop() if shared else None
    settings: list[Setting] = []
    seen: dict[str, str] = {}
    same_as: dict[str, str] = {}
    for setting in planned:
        identity = _identity(setting.config, setting.plan)
        if identity in seen:  # one_at_a_time: an axis at its default is the default setting
            same_as[setting.label] = seen[identity]
            continue
        seen[identity] = setting.label
        settings.append(setting)
    return SweepPlan(sweep_name, folder, spec, methods, settings, ref, centers, same_as)


def _check_option_owners(data: dict[str, Any], methods: list[str]) -> None:
    stray = sorted(set(data.get("method_options") or {}) - set(methods))
    if stray:
        raise UserError(f"method_options for {stray[0]!r}, which is not among --methods; remove it or add the method")


def _check_methods(config: RunConfig) -> None:
    """The config's methods exist and their options are in range (UserError otherwise); loads nothing."""
    from spd_bench.method import make_method
    from spd_bench.registry import METHODS

    for name in config.methods:
        METHODS.check(name)
        make_method(name, config.method_options.get(name))
    _check_option_owners(to_dict(config), config.methods)


def _config(base_data: dict[str, Any], flags: dict[str, Any], overrides: dict[str, Any], methods: list[str],
            output: Path | None) -> RunConfig:
    """A setting's config: the file and plain overrides (options of methods it does not run left out), then its axes."""
    data = dict(base_data)
    data["method_options"] = {m: o for m, o in (base_data.get("method_options") or {}).items() if m in methods}
    for axis, value in overrides.items():
        data = deep_merge(data, _nested(axis, value))
    chosen = {**flags, "methods": methods}
    if output is not None:
        chosen["output_dir"] = str(output)
    return make_config(data, chosen).with_absolute_paths()


def manifest(sweep: SweepPlan, command: str | None) -> dict[str, Any]:
    """``sweep.json``: what the ablation tables need besides the records, and the command to resume."""
    return {
        "name": sweep.name, "mode": sweep.spec.mode, "axes": list(sweep.spec.axes), "values": sweep.spec.axes,
        "center": sweep.centers, "methods": sweep.methods,
        "reference": sorted(sweep.reference.plan.methods) if sweep.reference else [],
        "settings": {s.label: s.overrides for s in sweep.settings}, "command": command,
    }


def compares_with_reference(sweep: SweepPlan, setting: Setting) -> bool:
    """Whether a setting's corpus diagnostics compare with the raw_sd corpus of the reference run
    (Pipeline's ``reference_corpus``): raw_sd runs there, not in the setting."""
    return (sweep.reference is not None and setting is not sweep.reference
            and VERSUS in sweep.reference.plan.methods)


def run_sweep(sweep: SweepPlan, run_setting: Callable[[Setting], list[Path]], command: str | None) -> list[Path]:
    """Write the manifest, then run the references and every setting (``run_setting``: one ordinary run)."""
    sweep.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep.folder / MANIFEST, manifest(sweep, command))
    records: list[Path] = []
    for setting in ([sweep.reference] if sweep.reference else []) + sweep.settings:
        records += run_setting(setting)
    return records
