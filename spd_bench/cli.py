"""Command line: argument parsing and output only; the work happens in the engine modules."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from spd_bench.config import absolute_path
from spd_bench.errors import UserError

STAGES = ("prepare", "sample", "curate", "train", "score")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    result = {}
    for value in values or []:
        key, sep, path = value.partition("=")
        if not sep or not key or not path:
            raise UserError(f"{flag} {value!r}: write it as NAME=PATH, e.g. {flag} gsm8k=./gsm8k_test.jsonl")
        result[key] = absolute_path(path)
    return result


# Every argument that names a file or folder; made absolute once, here, so that no later step
# (a sandboxed worker with another working folder, for one) can read it relative to the wrong place.
_PATH_ARGS = ("config", "output_dir", "cache_dir", "results", "out", "samples")


def _absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, absolute_path(value))
    args.plugin = [absolute_path(p) if p.endswith(".py") else p for p in args.plugin]
    return args


def _global_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Options that work before or after the subcommand (``--quiet run`` and ``run --quiet``).

    After the subcommand they land in ``sub_*`` fields, merged by ``_merge_globals``, so that
    a value given before the subcommand is never overwritten by the subparser's default.
    """
    parser.add_argument("--plugin", action="append", default=[], dest=f"{prefix}plugin", metavar="FILE.py|MODULE",
                        help="load methods or tasks from a file or module (repeatable)")
    parser.add_argument("--quiet", action="store_true", dest=f"{prefix}quiet",
                        help="no progress bars; only the result table and errors")


def _merge_globals(args: argparse.Namespace) -> argparse.Namespace:
    args.plugin = [*args.plugin, *getattr(args, "sub_plugin", [])]
    args.quiet = args.quiet or getattr(args, "sub_quiet", False)
    return args


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose subcommands also accept the global options."""

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        add_parser = action.add_parser

        def add_with_globals(name: str, **options: Any) -> argparse.ArgumentParser:
            sub = add_parser(name, **options)
            _global_options(sub, prefix="sub_")
            return sub

        action.add_parser = add_with_globals
        return action


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a run (config, model, methods, tasks, seeds, caches, overrides), shared by run and sweep."""
    from spd_bench.config import DEFAULT_HUB_MODEL, RunConfig

    defaults = RunConfig()
    parser.add_argument("--config", help="YAML run config; flags override its fields")
    parser.add_argument("--model", help="hub id, local folder, or built-in (`spd-bench list models`: organism,"
                        " smollm2-135m-instruct-q4, ...; default:"
                        f" organism for the synthetic suite, {DEFAULT_HUB_MODEL} for any other task)")
    parser.add_argument("--no-rebuild", action="store_true",
                        help="stop with an error instead of rebuilding a cached stage whose files fail verification")
    parser.add_argument("--methods", type=_csv, help=f"comma list (default {','.join(defaults.methods)})")
    parser.add_argument("--tasks", type=_csv,
                        help=f"comma list of tasks or groups (default {','.join(defaults.tasks)}; see `spd-bench list tasks`)")
    parser.add_argument("--seeds", type=_csv, help=f"comma list of integer seeds (default {','.join(map(str, defaults.seeds))})")
    parser.add_argument("--limit", type=int, help="evaluate on the first N items of each task (recorded)")
    parser.add_argument("--n-train", type=int, dest="n_train", help="use the first N training prompts of each source")
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", help="auto (default), float32, bfloat16, float16")
    parser.add_argument("--backend", help="inference engine: auto (default: vllm on a GPU when installed and able to"
                        " serve the run, else hf), hf or vllm (docs/backends.md)")
    parser.add_argument("--output", dest="output_dir", help="results folder (default results/)")
    parser.add_argument("--cache-dir", dest="cache_dir", help="artifact cache folder (default .spd_cache/)")
    parser.add_argument("--data", action="append", metavar="NAME=PATH", help="local data file for a task or source (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override any config field, e.g. train.lr=1e-4")
    parser.add_argument("--include-path", action="append", dest="include_path", metavar="DIR",
                        help="folder of your own lm-eval task YAML, for --tasks lm_eval:NAME (repeatable; config:"
                        " lm_eval.include_path)")
    parser.add_argument("--allow-code-execution", action="store_true", default=None, dest="allow_code_execution",
                        help="allow running generated code (sandboxed) for code tasks")
    parser.add_argument("--no-cache", action="store_true", help="recompute every stage (results still overwrite atomically)")
    parser.add_argument("--force", type=_csv, default=[], metavar="STAGE[,STAGE]", help=f"recompute these stages: {', '.join(STAGES)}")
    parser.add_argument("--no-leaderboard", action="store_true", help="do not rebuild the leaderboard after the run")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spd-bench", description="Benchmark harness for self-distillation of language models.")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run methods on tasks and score every model (default: the CPU organism suite)")
    _run_flags(run)
    run.add_argument("--shard", metavar="I/N",
                     help="run only the I-th of N shares of the cells (job arrays on a shared cache and output)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="where the cells run: local (default: this process) or ray (tasks on a Ray cluster;"
                     " docs/scaling.md)")
    run.add_argument("--ray-address", dest="ray_address", metavar="auto|HOST:PORT",
                     help="with --executor ray: the cluster to join (auto: the one running on this node; default:"
                     " $RAY_ADDRESS, else a new local cluster sized to this machine)")
    run.add_argument("--gpus-per-cell", dest="gpus_per_cell", type=float, metavar="N",
                     help="with --executor ray: GPUs each cell's task asks for (default: 1 when the cluster has"
                     " GPUs and --device is not cpu, else 0)")
    run.add_argument("--cpus-per-cell", dest="cpus_per_cell", type=float, metavar="N",
                     help="with --executor ray: CPUs each cell's task asks for (default 1)")
    run.add_argument("--tracker", type=_csv, default=[], metavar="trackio|wandb|mlflow",
                     help="log every cell (config, stage timings, training curve, metrics) to these experiment"
                     " trackers (docs/interop.md)")
    run.add_argument("--tracker-project", dest="tracker_project", default="spd-bench",
                     help="the trackers' project (default spd-bench)")

    sweep = sub.add_parser("sweep", help="run a grid of option settings (--set FIELD=V1,V2,...) into ablation"
                           " tables and plots (docs/ablations.md)")
    _run_flags(sweep)
    sweep.add_argument("--name", help="the sweep's folder under RESULTS/sweeps/ (default: the swept options' names)")
    sweep.add_argument("--mode", choices=["grid", "one_at_a_time"],
                       help="grid: every combination of the axes; one_at_a_time: each axis alone, the others at their"
                       " default (default: the config's sweep.mode, else grid)")
    sweep.add_argument("--no-reference", action="store_true", dest="no_reference",
                       help="do not run base, raw_sd and spd_random beside the swept methods")

    lst = sub.add_parser("list", help="list registered tasks or methods")
    lst.add_argument("what", choices=["tasks", "methods", "backends", "models"])
    lst.add_argument("--verbose", "-v", action="store_true", help="show options and defaults")
    lst.add_argument("--lm-eval", action="store_true", dest="lm_eval",
                     help="with tasks: every task, group and tag lm-eval offers (usable as --tasks lm_eval:NAME)")
    lst.add_argument("--include-path", action="append", dest="include_path", default=[], metavar="DIR",
                     help="with --lm-eval: also your own lm-eval task folders (repeatable)")

    board = sub.add_parser("leaderboard", help="rebuild tables and plots from stored result records (no model work)")
    board.add_argument("--results", default="results", help="folder of result records (default results/)")
    board.add_argument("--out", help="where to write the tables (default: the results folder)")
    board.add_argument("--format", type=_csv, default=["md", "csv", "tex", "html", "png"], help="md,csv,tex,html,png")
    board.add_argument("--model", type=_csv, dest="models", help="only these models")
    board.add_argument("--methods", type=_csv, help="only these methods")
    board.add_argument("--tasks", type=_csv, help="only these tasks")
    board.add_argument("--metric", help="metric to show instead of each task's primary metric")
    board.add_argument("--allow-mixed", action="store_true", help="allow cells whose evaluation settings (the backend among them) differ")

    report = sub.add_parser("report", help="one cell's metrics vs base and raw_sd, budget, training curve and"
                            " diagnostics, from its records (no model work)")
    report.add_argument("cell", nargs="?", metavar="CELL", help="METHOD/SOURCE/seedN as runs print it (e.g."
                        " spd/gsm8k_train/seed1), or base; or use --method/--source/--seed")
    report.add_argument("--method", help="the cell's method (instead of CELL)")
    report.add_argument("--source", help="its training source (default: the only one there is)")
    report.add_argument("--seed", type=int, help="its seed (default: the only one there is)")
    report.add_argument("--model", help="its model (default: the only one there is)")
    report.add_argument("--results", default="results", help="folder of result records (default results/)")

    score = sub.add_parser("score", help="score stored completions through the same path as `run`")
    score.add_argument("--task", required=True)
    score.add_argument("--samples", required=True, help="JSONL: {task_id|doc_id, completion|response}, or an lm-eval"
                       " --log_samples file (scored again by lm-eval)")
    score.add_argument("--limit", type=int)
    score.add_argument("--cache-dir", default=".spd_cache")
    score.add_argument("--data", action="append", metavar="NAME=PATH")
    score.add_argument("--allow-code-execution", action="store_true")
    score.add_argument("--include-path", action="append", dest="include_path", default=[], metavar="DIR",
                       help="folder of your own lm-eval task YAML, for --task lm_eval:NAME (repeatable)")

    prefetch = sub.add_parser("prefetch", help="fill the caches with task data and models on a networked machine (for offline GPU nodes)")
    prefetch.add_argument("--tasks", type=_csv, default=[], help="tasks or groups, e.g. paper or gsm8k,bbh")
    prefetch.add_argument("--model", action="append", default=[], dest="models", metavar="HUB_ID|BUILT_IN",
                          help="also download this hub model into the hub cache, or fetch and convert this built-in"
                               " model into --cache-dir (repeatable)")
    prefetch.add_argument("--cache-dir", default=".spd_cache")

    export = sub.add_parser("export", help="a fine-tuned cell out of the cache as a portable folder: its LoRA adapter,"
                            " merged weights or SPD's projected generator, with a model card (docs/export.md)")
    export.add_argument("--results", default="results", help="folder of result records (default results/)")
    export.add_argument("--cache-dir", dest="cache_dir",
                        help="artifact cache the cell ran in (default: the one its records name)")
    export.add_argument("--model", required=True, help="the run's model, spelled as the run was given it")
    export.add_argument("--method", required=True, help="a method that trains, e.g. spd, raw_sd")
    export.add_argument("--source", help="training source (default: the only one this method and seed trained on)")
    export.add_argument("--seed", type=int, required=True)
    export.add_argument("--out", required=True, help="new folder to write (built aside, renamed into place)")
    export.add_argument("--merge", action="store_true", help="the adapter merged into the base weights: a plain checkpoint")
    export.add_argument("--projected", action="store_true",
                        help="spd/spd_random: SPD's generator, the base model with the K/V projection folded in")
    export.add_argument("--push-to-hub", dest="push_to_hub", metavar="REPO",
                        help="then upload the folder to this hub model repo (created when missing)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")

    organism = sub.add_parser("organism", help="the built-in CPU model")
    organism_sub = organism.add_subparsers(dest="organism_command", required=True)
    build = organism_sub.add_parser("build", help="make the organism ready now (otherwise on first use): from the"
                                    " shipped weights when they match the recipe, else by pretraining")
    build.add_argument("--cache-dir", default=".spd_cache")
    build.add_argument("--from-scratch", action="store_true",
                       help="pretrain (about 5 minutes on 2 cores) into CACHE_DIR/organism-scratch and compare the"
                       " result with the shipped weights")
    build.add_argument("--ship", action="store_true",
                       help="with --from-scratch: make the new build the shipped weights (after changing the recipe)")
    return parser


def _run(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.config import deep_merge, make_config, parse_set
    from spd_bench.engine.plan import make_plan

    _check_force(args)
    _check_executor_flags(args)
    from spd_bench.tracking import check_trackers

    trackers = check_trackers(args.tracker)  # a missing tracker stops the run before anything is written
    yaml_data, flags = _run_inputs(args)
    config = make_config(deep_merge(yaml_data, parse_set(args.set)), flags).with_absolute_paths()
    ray_executor = _ray_executor(args, console, config) if args.executor == "ray" else None  # checked before planning
    plan = make_plan(config)
    if args.shard:
        from spd_bench.engine.plan import select_shard

        plan.cells = select_shard(plan.cells, args.shard)

    from spd_bench.engine.executors import command_without_executor
    from spd_bench.report import RichReporter

    reporter = RichReporter(console, quiet=args.quiet)
    console.print(f"[bold]spd-bench run[/bold]: model {config.model}, {len(plan.cells)} cells, "
                  f"tasks {', '.join(plan.tasks)}, backend {plan.backend}, config {config.hash()}")
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False)
    command = command_without_executor()  # the executor options change no number: records leave them out
    if ray_executor is not None:
        from spd_bench.engine.executors import TaskFailed

        try:
            records, stage_log = _run_on_ray(ray_executor, config, plan, console)
        except TaskFailed as exc:
            from rich.console import Console
            from rich.markup import escape

            Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return 1
    else:
        from spd_bench.engine.executors import local_info
        from spd_bench.engine.pipeline import Pipeline
        from spd_bench.store import ArtifactStore

        store = ArtifactStore(Path(config.cache_dir), use_cache=not args.no_cache, force=set(args.force),
                              rebuild=not args.no_rebuild)
        pipeline = Pipeline(config, plan, store, reporter, executor_info=local_info(args.shard), command=command)
        records = pipeline.run()
        stage_log = pipeline.stage_log
    reporter.summary(stage_log)
    console.print(f"{len(records)} result records in {config.output_dir}/records")
    if trackers:
        from spd_bench.results import load_record
        from spd_bench.tracking import log_cells

        logged = log_cells([load_record(path) for path in records], trackers, args.tracker_project)
        console.print(f"{len(logged)} cells logged to {', '.join(trackers)} (project {args.tracker_project})",
                      highlight=False)
    if not args.no_leaderboard:
        _show_leaderboard(console, Path(config.output_dir), Path(config.output_dir), ["md", "csv", "png"],
                          models=[config.model], methods=config.methods, tasks=list(plan.tasks))
    return 0


def _check_force(args: argparse.Namespace) -> None:
    from spd_bench.engine.pipeline import STAGES as PIPELINE_STAGES

    bad = [s for s in args.force if s not in PIPELINE_STAGES]
    if bad:
        raise UserError(f"--force {bad[0]!r} is not a stage; stages are {', '.join(PIPELINE_STAGES)}")


def _run_inputs(args: argparse.Namespace, sweep: bool = False,
                sets: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the --config file's fields, the flags that override them) of a run or (``sweep``) a sweep;
    ``sets``: the plain ``--set`` items (default: all of them; a sweep's axes are not overrides)."""
    from spd_bench.config import load_yaml

    yaml_data = load_yaml(args.config) if args.config else {}
    if "sweep" in yaml_data and not sweep:
        raise UserError(f"config {args.config} describes a sweep; run it with `spd-bench sweep --config {args.config}`")
    flags = {name: getattr(args, name) for name in (
        "model", "methods", "tasks", "seeds", "limit", "n_train", "device", "dtype", "backend", "output_dir",
        "cache_dir", "allow_code_execution",
    )}
    if args.data:
        flags["data"] = {**yaml_data.get("data", {}), **_pairs(args.data, "--data")}
    if args.include_path:  # added to the folders the config file and --set name
        from spd_bench.config import deep_merge, parse_set

        named = deep_merge(yaml_data, parse_set(args.set if sets is None else sets)).get("lm_eval") or {}
        flags["lm_eval"] = {"include_path": [*(named.get("include_path") or []), *args.include_path]}
    return yaml_data, flags


def _sweep(args: argparse.Namespace, console: Any) -> int:
    """Every setting of the sweep planned and checked, then run one by one on one cache; then its tables."""
    import shlex

    from spd_bench.config import deep_merge, parse_set
    from spd_bench.sweep import combine, compares_with_reference, plan_sweep, run_sweep, spec_from_yaml, split_sets

    _check_force(args)
    plain, axes = split_sets(args.set)
    yaml_data, flags = _run_inputs(args, sweep=True, sets=plain)
    from_file = spec_from_yaml(yaml_data.pop("sweep"), args.config) if "sweep" in yaml_data else None
    overrides = parse_set(plain)
    spec = combine(from_file, axes, {item.partition("=")[0] for item in plain}, args.mode)
    name = args.name or (Path(args.config).stem if from_file else None)  # configs/paper_ablations.yaml: paper_ablations
    sweep = plan_sweep(deep_merge(yaml_data, overrides), flags, spec, name, reference=not args.no_reference)
    console.print(f"[bold]spd-bench sweep[/bold] {sweep.name}: {len(sweep.settings)} settings"
                  f" ({spec.mode}: {', '.join(spec.axes)}) of {', '.join(sweep.methods)}"
                  + (f", references {', '.join(sweep.reference.plan.methods)} once" if sweep.reference else "")
                  + f", into {sweep.folder}", highlight=False)
    for label, same in sweep.same_as.items():
        console.print(f"note: setting {label} computes the same as {same}; it runs once", highlight=False)
    planned = ([sweep.reference] if sweep.reference else []) + sweep.settings
    for note in dict.fromkeys(note for setting in planned for note in setting.plan.notes):
        console.print(f"note: {note}", highlight=False)

    from spd_bench.engine.executors import command_without_executor, local_info
    from spd_bench.engine.pipeline import Pipeline
    from spd_bench.report import RichReporter
    from spd_bench.store import ArtifactStore

    reporter = RichReporter(console, quiet=args.quiet)
    command = command_without_executor()

    def run_setting(setting: Any) -> list[Path]:
        console.print(f"[bold]setting {setting.label}[/bold]: {len(setting.plan.cells)} cells", highlight=False)
        store = ArtifactStore(Path(setting.config.cache_dir), use_cache=not args.no_cache, force=set(args.force),
                              rebuild=not args.no_rebuild)
        pipeline = Pipeline(setting.config, setting.plan, store, reporter, executor_info=local_info(), command=command,
                            reference_corpus=compares_with_reference(sweep, setting))
        records = pipeline.run()
        reporter.summary(pipeline.stage_log)
        return records

    records = run_sweep(sweep, run_setting, shlex.join(["spd-bench", *sys.argv[1:]]))
    console.print(f"{len(records)} result records in {sweep.folder}")
    if not args.no_leaderboard:
        from spd_bench.leaderboard.ablation import build_ablation
        from spd_bench.leaderboard.ablation_formats import ABLATION_FORMATS, write_ablation

        ablation = build_ablation(sweep.folder)
        written = write_ablation(ablation, sweep.folder, list(ABLATION_FORMATS))
        console.print(f"ablation tables: {', '.join(str(p) for p in written.values())}", highlight=False)
    return 0


def _check_executor_flags(args: argparse.Namespace) -> None:
    """The executor options agree with each other (checked before anything is loaded)."""
    if args.executor == "ray":
        if args.shard:
            raise UserError("--shard is for job arrays without Ray; --executor ray spreads every cell over the"
                            " cluster itself: drop --shard (or use --executor local)")
        return
    given = [flag for flag, value in (("--ray-address", args.ray_address), ("--gpus-per-cell", args.gpus_per_cell),
                                      ("--cpus-per-cell", args.cpus_per_cell)) if value is not None]
    if given:
        raise UserError(f"{given[0]} is an option of --executor ray; add --executor ray or drop {given[0]}")


def _ray_executor(args: argparse.Namespace, console: Any, config: Any) -> Any:
    """The Ray executor of ``--executor ray`` (spd_bench/engine/executors.py), its settings checked and
    its cluster's address answering (no cluster is started yet)."""
    from spd_bench.engine.executors import RayExecutor, RaySettings, StoreOptions, command_without_executor

    settings = RaySettings(
        address=args.ray_address,
        gpus_per_cell=args.gpus_per_cell,  # None: 1 on a cluster with GPUs (unless --device cpu), else 0
        cpus_per_cell=args.cpus_per_cell if args.cpus_per_cell is not None else 1.0,
    )
    store = StoreOptions(use_cache=not args.no_cache, force=frozenset(args.force), rebuild=not args.no_rebuild)
    executor = RayExecutor(settings, store=store, plugins=list(args.plugin),
                           command=command_without_executor(), quiet=args.quiet,
                           echo=lambda line: console.print(line, highlight=False, markup=False))
    executor.check(config)
    return executor


def _run_on_ray(executor: Any, config: Any, plan: Any, console: Any) -> tuple[list[Path], list[dict[str, Any]]]:
    """The plan's cells as tasks on the Ray cluster: the records and the stage log of every task."""
    outcome = executor.run(config, plan)
    served = {(task["backend"], str(task["engine"].get("dtype"))) for task in outcome.tasks}
    if served and served != {(plan.backend, str(plan.engine_settings.get("dtype")))}:
        console.print("note: the Ray workers served the models with " + "; ".join(
            f"backend {backend} ({dtype})" for backend, dtype in sorted(served)), highlight=False, markup=False)
    return outcome.records, outcome.stage_log


def _show_leaderboard(console: Any, results: Path, out: Path | None, formats: list[str], **filters: Any) -> None:
    from spd_bench.leaderboard import build_leaderboard, render_terminal

    board = build_leaderboard(results, out, formats, **filters)
    render_terminal(board, console)


def _list(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    if args.lm_eval or args.include_path:
        return _list_lm_eval(args, console)
    if args.what == "tasks":
        from spd_bench.tasks import TASKS, ensure_loaded, get_task, groups

        ensure_loaded()
        table = Table(title="tasks")
        for column in ("task", "kind", "scorer", "training source", "out-of-domain", "description"):
            table.add_column(column)
        for name in TASKS.names():
            spec = get_task(name)
            table.add_row(name, spec.kind, spec.scorer, spec.training_source or "-", ",".join(spec.ood) or "-", spec.description)
        console.print(table)
        for group, members in sorted(groups().items()):
            console.print(f"group [bold]{group}[/bold]: {', '.join(members)}")
        return 0
    if args.what == "backends":
        return _list_backends(console)
    if args.what == "models":
        return _list_models(console)
    from spd_bench.registry import METHODS

    table = Table(title="methods")
    for column in ("method", "external signal", "source", "description"):
        table.add_column(column)
    for name in METHODS.names():
        cls = METHODS.get(name)
        table.add_row(name, cls.external_signal or "none", METHODS.source(name), cls.description)
    console.print(table)
    if args.verbose:
        for name in METHODS.names():
            cls = METHODS.get(name)
            defaults = cls.option_defaults()
            if not defaults:
                continue
            options = Table(title=f"{name} options")
            for column in ("option", "default", "paper", "matches"):
                options.add_column(column)
            for key, value in defaults.items():
                paper = cls.paper_defaults.get(key, "-")
                match = "-" if key not in cls.paper_defaults else ("yes" if paper == value else "NO")
                options.add_row(key, repr(value), repr(paper) if paper != "-" else "-", match)
            console.print(options)
    return 0


def _list_lm_eval(args: argparse.Namespace, console: Any) -> int:
    """What lm-eval offers (its TaskManager, imported only here), the user's folders included."""
    from spd_bench.scoring.lmeval_tasks import check_include_paths, listing

    if args.what != "tasks" or not args.lm_eval:
        raise UserError("--lm-eval and --include-path list lm-eval's tasks: `spd-bench list tasks --lm-eval"
                        " [--include-path DIR]`")
    folders = [absolute_path(p) for p in args.include_path]
    check_include_paths(folders)
    entries = listing(folders)
    for name, kind in entries:
        console.print(f"lm_eval:{name}" + ("" if kind == "task" else f"  ({kind})"), highlight=False, markup=False)
    console.print(f"{len(entries)} lm-eval tasks, groups and tags; run one with --tasks lm_eval:NAME", highlight=False)
    return 0


def _list_models(console: Any) -> int:
    """The built-in models (--model NAME); any local folder or hub id works too."""
    from rich.table import Table

    from spd_bench.builtin_models import BUILTIN_MODELS

    table = Table(title="built-in models")
    for column in ("model", "source", "description"):
        table.add_column(column)
    for name in BUILTIN_MODELS.names():
        table.add_row(name, BUILTIN_MODELS.source(name), BUILTIN_MODELS.get(name).description)
    console.print(table)
    console.print("--model also takes a local folder (save_pretrained) or a hub id", highlight=False)
    return 0


def _list_backends(console: Any) -> int:
    """Each registered backend and whether it can run here (vllm: installed and importable)."""
    from rich.table import Table

    from spd_bench.backends import BACKENDS

    table = Table(title="backends (--backend; docs/backends.md)")
    for column in ("backend", "source", "status"):
        table.add_column(column)
    for name in BACKENDS.names():
        status = "ready"
        if name == "vllm":
            from spd_bench.backends.vllm import vllm_unsupported

            status = vllm_unsupported() or "ready (installed)"
        table.add_row(name, BACKENDS.source(name), status)
    console.print(table)
    return 0


def _leaderboard(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.leaderboard import build_ablations, check_formats, main_record_files, sweep_folders

    results = Path(args.results)
    out = Path(args.out) if args.out else results
    check_formats(args.format)
    if main_record_files(results) or not sweep_folders(results):  # a folder of sweeps alone has no main board
        _show_leaderboard(
            console, results, out, args.format, models=args.models,
            methods=args.methods, tasks=args.tasks, metric=args.metric, allow_mixed=args.allow_mixed,
        )
    for ablation in build_ablations(results, out, args.format):
        console.print(f"sweep {ablation.name}: {', '.join(str(p) for p in ablation.files.values())}", highlight=False)
    return 0


def _report(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.cell_report import cell_report, parse_cell

    query = parse_cell(args.cell, args.method, args.source, args.seed, args.model)
    console.print(cell_report(Path(args.results), query), highlight=False, markup=False, end="")
    return 0


def _score(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.rescore import score_samples_file

    metrics = score_samples_file(
        args.task, Path(args.samples), cache_dir=Path(args.cache_dir), limit=args.limit,
        data=_pairs(args.data, "--data"), allow_code_execution=args.allow_code_execution,
        include_path=[absolute_path(p) for p in args.include_path],
    )
    for name, value in metrics.items():
        console.print(f"{name} {value:.4f}")
    return 0


def _prefetch(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.data.prefetch import prefetch

    if not args.tasks and not args.models:
        raise UserError("nothing to prefetch; pass --tasks (e.g. --tasks paper) and/or --model HUB_ID|BUILT_IN")
    failed = 0
    for model in args.models:
        from spd_bench.builtin_models import BUILTIN_MODELS
        from spd_bench.models import download_model, resolve_model_path

        if model in BUILTIN_MODELS:  # fetched and converted into the cache (what an offline node needs)
            folder = resolve_model_path(model, Path(args.cache_dir))[0]
            console.print(f"[bold]{model}[/bold]: built and verified at {folder}", highlight=False)
            continue
        console.print(f"[bold]{model}[/bold]: in the hub cache at {download_model(model)}", highlight=False)
    report = prefetch(args.tasks, Path(args.cache_dir)) if args.tasks else {}
    for name, entry in report.items():
        console.print(f"[bold]{name}[/bold]: {entry['status']}", highlight=False)
        for note in entry.get("fetched", []):
            console.print(f"  {note}", highlight=False)
        failed += entry["status"].startswith("not available")
    return 1 if failed else 0


def _export(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.export import ExportRequest, export_cell

    request = ExportRequest(
        results=Path(args.results), model=args.model, method=args.method, seed=args.seed, out=Path(args.out),
        source=args.source, cache_dir=Path(args.cache_dir) if args.cache_dir else None, merge=args.merge,
        projected=args.projected, push_to_hub=args.push_to_hub, private=args.private,
    )
    export_cell(request, progress=lambda message: console.print(message, highlight=False, markup=False))
    return 0


def _organism(args: argparse.Namespace, console: Any) -> int:
    from spd_bench.organism.build import BuildConfig, build_key, build_organism, organism_dir
    from spd_bench.organism.shipped import differences, ship

    def progress(message: str) -> None:
        console.print(message, highlight=False)

    if args.ship and not args.from_scratch:
        raise UserError("--ship makes a new build the shipped weights; add --from-scratch")
    if not args.from_scratch:
        console.print(f"organism ready in {organism_dir(Path(args.cache_dir), progress=progress)}")
        return 0
    path = build_organism(Path(args.cache_dir) / "organism-scratch", progress=progress, from_scratch=True)
    differing = differences(path)
    console.print(f"built in {path}: " + ("identical to the shipped weights" if not differing
                                          else f"differs from the shipped weights in {', '.join(differing)}"))
    if args.ship:
        ship(path, build_key(BuildConfig()))
        console.print("shipped: spd_bench/organism/shipped/ now holds this build")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    # Deprecation notices from the libraries (e.g. peft calling a renamed transformers method)
    # are not the user's to act on; keep the run's output readable.
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args = _absolute_paths(_merge_globals(parser.parse_args(argv)))
    from rich.console import Console

    # Output to a file or pipe (a log, CI) gets room for the leaderboard instead of rich's 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    errors = Console(stderr=True)
    if args.quiet or not sys.stderr.isatty():
        # The libraries' own progress bars are for terminals; in a log file they are noise.
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        from spd_bench.registry import load_plugin

        for plugin in args.plugin:
            load_plugin(plugin)
        handler = {"run": _run, "sweep": _sweep, "list": _list, "leaderboard": _leaderboard, "report": _report, "score": _score,
                   "prefetch": _prefetch, "organism": _organism, "export": _export}[args.command]
        return handler(args, console)
    except UserError as exc:
        errors.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        return UserError.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted; run the same command again to resume from the cache")
        return 130


if __name__ == "__main__":
    sys.exit(main())
