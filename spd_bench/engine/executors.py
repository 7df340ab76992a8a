"""Where a run's cells are computed: in this process (``local``) or as tasks on a Ray cluster (``ray``).

The local executor is ``Pipeline(config, plan, store).run()`` in the CLI's process (``--shard I/N``
picks a share of the cells for job arrays). The Ray executor sends the same work to a cluster:
each task runs ``Pipeline(config, plan with some of the cells, store).run()`` in a Ray worker on a
cache and output folder every node sees. Nothing else changes: stage keys, stages and records
are the ones a local run makes, and the store (one builder per stage key across processes, under a
lock file the kernel releases when its holder dies; stages published atomically) makes any
overlap between tasks safe and a rerun resume where the last one stopped.

How cells become tasks (``plan_tasks``):

* **one task per trained cell** (method, training source, seed). A cell's stages are its own: its
  sample, curate and train keys hold its seed, its score keys its adapter. Cells are therefore
  independent, and a cluster with more devices than methods runs more of them at once (seeds in
  parallel). Inside a task ``Pipeline.run`` keeps its engine-friendly order for the cell (the
  projected model's engine, then training, then one engine scoring the adapter), so a GPU task
  starts each engine once for its cell.
* **one task for every untrained cell** (``base``, and any method that does not train): they are
  all scored by the base model, so one task starts its engine once for all of them. It is
  submitted first; no other task needs its stages (trained cells score their adapters).
* **one preparation task per shared preparation**: the one stage that cells do share is a
  method's ``prepare`` that does not depend on the seed (SPD's projectors, shared across seeds).
  It runs once, in its own task, and the cells that use it wait for that task (a Ray dependency,
  which holds no devices while it waits) instead of racing for the stage's lock with a device
  each. ``--no-cache`` and ``--force prepare`` still recompute it once per run: the cells reuse
  what their preparation task just rebuilt.

So no stage key belongs to two tasks, and none is built twice (the store's lock would also make
that safe, but a task waiting on a lock holds its GPU idle). Tasks that fail for a system reason
(a worker or node that died) run again (``max_retries``); the stages their first attempt finished
are reused. A task that raises (a ``UserError``, a bug) is not retried: the run lets the other
tasks finish (their stages stay cached), then stops with one line naming the cell.

Provenance: each record says which executor computed it (``provenance["executor"]``: name,
tasks, workers, devices, the task and its host); nothing of it enters a metric or a stage key, so
a Ray run's records and leaderboard equal a local run's.

``import ray`` happens only in ``RayExecutor.check`` and in the tasks: no other command pays for it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spd_bench.errors import UserError

if TYPE_CHECKING:
    from spd_bench.config import RunConfig
    from spd_bench.engine.plan import Cell, Plan
    from spd_bench.store import ArtifactStore

# The options that choose where cells run, never what they compute (each takes a value): left out of
# the command a record keeps (``provenance["command"]``), which reproduces the numbers with either
# executor; the executor's own settings are in ``provenance["executor"]``.
EXECUTOR_OPTIONS = ("--executor", "--ray-address", "--gpus-per-cell", "--cpus-per-cell")
# Environment variables a Ray worker on another node needs to behave like this process (offline hub,
# caches, quiet libraries; SPD_BENCH_* for plugins and tests).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE",
                 "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "TQDM_DISABLE")
CONNECT_TIMEOUT_S = 5.0
MAX_RETRIES = 3  # Ray reruns a task whose worker died this many times (not one that raised)


# ---- what every executor shares ------------------------------------------------------------------
def command_without_executor(argv: list[str] | None = None) -> str | None:
    """The command a record keeps: the console script's, without the executor options (and their
    values), which change where cells run and never a number. None outside the console script, as
    ``records.command_line``."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name != "spd-bench":
        return None
    kept: list[str] = []
    skip = False
    for token in argv[1:]:
        if skip:
            skip = False
            continue
        name, sep, _value = token.partition("=")
        # argparse takes an unambiguous prefix for an option (``--exec ray``): a prefix of one of these
        # names that it accepted names that option (the run parser has no option that is one).
        if not (name.startswith("--") and len(name) > 2 and any(o.startswith(name) for o in EXECUTOR_OPTIONS)):
            kept.append(token)
            continue
        skip = not sep  # ``--executor ray``: its value is the next token
    return "spd-bench " + " ".join(kept)


def local_info(shard: str | None = None) -> dict[str, Any]:
    """``provenance["executor"]`` of a run in this process."""
    info: dict[str, Any] = {"name": "local", "tasks": 1, "workers": 1, "host": socket.gethostname()}
    if shard:
        info["shard"] = shard
    return info


@dataclass(frozen=True)
class StoreOptions:
    """The store's settings, sent to each task (a store holds per-process state and is opened there)."""

    use_cache: bool = True
    force: frozenset[str] = frozenset()
    rebuild: bool = True

    def open(self, root: Path) -> ArtifactStore:
        from spd_bench.store import ArtifactStore

        return ArtifactStore(root, use_cache=self.use_cache, force=set(self.force), rebuild=self.rebuild)

    def after_preparation(self) -> StoreOptions:
        """For a cell whose preparation another task (re)built in this run: everything it was asked
        to recompute but that preparation, which it reuses."""
        from spd_bench.engine.pipeline import STAGES

        forced = set(STAGES) if not self.use_cache else set(self.force)
        return StoreOptions(use_cache=True, force=frozenset(forced - {"prepare"}), rebuild=self.rebuild)


# ---- cells -> tasks ------------------------------------------------------------------------------
CellId = tuple[str, "str | None", "int | None"]


def cell_id(cell: Cell) -> CellId:
    return (cell.method, cell.source, cell.seed)


@dataclass
class Task:
    """A Ray task: ``kind`` "cells" runs ``Pipeline.run`` on ``cells``; "prepare" builds the shared
    preparation of ``cells[0]``'s (method, source). ``after``: the index of the preparation task a
    cell waits for."""

    label: str
    kind: str
    cells: list[CellId]
    after: int | None = None


def plan_tasks(plan: Plan) -> list[Task]:
    """The run's tasks in submission order: the untrained cells, the shared preparations, then one
    task per trained cell (see the module's docstring for why)."""
    from spd_bench.engine.pipeline import cell_label

    untrained = [cell for cell in plan.cells if not plan.methods[cell.method].trains]
    trained = [cell for cell in plan.cells if plan.methods[cell.method].trains]
    tasks: list[Task] = []
    if untrained:
        tasks.append(Task(label=",".join(cell_label(c) for c in untrained), kind="cells", cells=[cell_id(c) for c in untrained]))

    def shared_by(cell: Cell) -> tuple[str, str | None] | None:
        method = plan.methods[cell.method]
        if not method.has_prepare or method.prepare_uses_seed:
            return None
        group = [c for c in trained if (c.method, c.source) == (cell.method, cell.source)]
        return (cell.method, cell.source) if len(group) > 1 else None

    preparations: dict[tuple[str, str | None], int] = {}
    for cell in trained:
        group = shared_by(cell)
        if group is not None and group not in preparations:
            preparations[group] = len(tasks)
            tasks.append(Task(label=f"{cell.method}/{cell.source}/prepare", kind="prepare", cells=[cell_id(cell)]))
    for cell in trained:
        group = shared_by(cell)
        tasks.append(Task(label=cell_label(cell), kind="cells", cells=[cell_id(cell)],
                          after=preparations[group] if group is not None else None))
    return tasks


# ---- the Ray driver -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: $RAY_ADDRESS when set, else a new local cluster sized to this machine
    gpus_per_cell: float | None = None  # None: 1 when the cluster has GPUs and --device is not cpu, else 0
    cpus_per_cell: float = 1.0
    max_retries: int = MAX_RETRIES


@dataclass
class Outcome:
    """What the tasks of a run did: every record written, every stage's log entry, and each task's
    report (label, host, pid, backend, seconds)."""

    records: list[Path] = field(default_factory=list)
    stage_log: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)


class TaskFailed(Exception):
    """A task raised something other than a UserError, or its worker died more than ``max_retries``
    times: one line naming the cell (the CLI prints it and exits 1)."""


def check_settings(settings: RaySettings, config: RunConfig) -> None:
    """Refuse what no cluster can fix, before connecting to one (``gpus_per_cell`` once resolved, too)."""
    gpus = settings.gpus_per_cell
    if gpus is not None and gpus < 0:
        raise UserError(f"--gpus-per-cell {gpus:g}: give 0 or more GPUs per cell (e.g. 1)")
    if settings.cpus_per_cell <= 0:
        raise UserError(f"--cpus-per-cell {settings.cpus_per_cell:g}: give more than 0 CPUs per cell (e.g. 1)")
    if gpus == 0 and config.device.startswith("cuda"):
        raise UserError(f"--device {config.device} with --gpus-per-cell 0: a cell's task would use GPUs Ray did not"
                        " give it; pass --gpus-per-cell 1 (or more), or --device cpu")
    tp = config.vllm.tensor_parallel_size
    if config.backend != "hf" and tp > 1 and gpus is not None and gpus < tp:
        raise UserError(f"--gpus-per-cell {gpus:g} is fewer than vllm.tensor_parallel_size {tp}; pass --gpus-per-cell {tp}")


def resolve_gpus(settings: RaySettings, config: RunConfig, cluster_gpus: float) -> RaySettings:
    """``gpus_per_cell`` auto (None): one GPU per cell when the cluster has GPUs and the run may use
    them (``--device`` auto or cuda), none otherwise; checked again once resolved."""
    from dataclasses import replace

    if settings.gpus_per_cell is not None:
        return settings
    gpus = 1.0 if cluster_gpus > 0 and not config.device.startswith("cpu") else 0.0
    if gpus == 0 and config.device.startswith("cuda"):
        raise UserError(f"--device {config.device}: the Ray cluster has no GPUs; pass --device cpu, or join a"
                        " cluster with GPUs (--ray-address)")
    resolved = replace(settings, gpus_per_cell=gpus)
    check_settings(resolved, config)
    return resolved


def _import_ray() -> Any:
    # Read when Ray is imported: Ray folds lines that look alike across workers into one ("repeated
    # 3x"), but the stage lines of different cells look alike and each one says something.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in a log file
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--executor ray needs Ray ({exc}); install it with `pip install 'spd-bench[ray]'`"
                        " (or `pip install 'ray>=2.60,<3'`), or use --executor local") from exc
    return ray


def _bootstrap_address(address: str, origin: str) -> str | None:
    """host:port that ``address`` ("auto", "host:port", "ray://host:port") leads to, when known."""
    if address.startswith("ray://"):
        return address[len("ray://"):]
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address  # what ray.init("auto") does first
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError as exc:
        raise UserError(f"{origin}: no Ray cluster runs on this node (`ray start` recorded none); start one with"
                        " `ray start --head`, pass HOST:PORT, or leave the address out for a local cluster") from exc
    except Exception:  # noqa: BLE001 - Ray's own init says what is wrong
        return None


def _check_reachable(address: str, origin: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at the address (``ray.init`` retries for long).
    ``origin``: where the address came from, for the message (``--ray-address X``, ``$RAY_ADDRESS=X``)."""
    target = _bootstrap_address(address, origin)
    if not target:
        return
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"{origin}: write it as auto or HOST:PORT (the head's GCS port, 6379 by default)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UserError(f"{origin}: no Ray cluster answers at {target} ({exc.strerror or exc}); start one with"
                        " `ray start --head`, or leave the address out for a local cluster") from exc


def _connect(ray: Any, address: str, origin: str, quiet: bool) -> None:
    """Start (``address`` "local") or join the cluster."""
    env = {name: value for name, value in os.environ.items()
           if name in FORWARDED_ENV or name.startswith("SPD_BENCH_")}
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": not quiet,
                               "runtime_env": {"env_vars": env} if env else None}
    if address == "local":
        options["include_dashboard"] = False
    # A new local cluster announces that it uses the token in ~/.ray (Ray's default): not news here.
    token_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = token_logger.level
    token_logger.setLevel(logging.ERROR)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # Ray joins a cluster named by its address with token authentication only when told to
        hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token (the token is read from"
                " $RAY_AUTH_TOKEN or ~/.ray/auth_token)") if address not in ("local", "auto") and "RAY_AUTH_MODE" not in os.environ else ""
        raise UserError(f"{origin}: cannot connect to Ray ({first}){hint}") from exc
    finally:
        token_logger.setLevel(level)


def _cluster(ray: Any, settings: RaySettings, address: str) -> dict[str, Any]:
    """The cluster as the records describe it, and how many cells it runs at once; refuses a local
    cluster that can never run a cell (a connected one may still grow: it only gets a warning)."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    resources = ray.cluster_resources()

    gpus = settings.gpus_per_cell or 0.0

    def fits(node: dict[str, Any]) -> int:
        have = node.get("Resources", {})
        counts = [int(have.get("CPU", 0) // settings.cpus_per_cell)]
        if gpus > 0:
            counts.append(int(have.get("GPU", 0) // gpus))
        return min(counts)

    slots = sum(fits(node) for node in nodes)
    info = {
        "name": "ray", "ray": ray.__version__, "address": address, "nodes": len(nodes),
        "cluster_cpus": resources.get("CPU", 0), "cluster_gpus": resources.get("GPU", 0),
        "cpus_per_cell": settings.cpus_per_cell, "gpus_per_cell": gpus, "workers": slots,
    }
    if slots == 0:
        biggest = max(({k: v for k, v in n.get("Resources", {}).items() if k in ("CPU", "GPU")} for n in nodes),
                      key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        message = (f"no node of the Ray cluster has {settings.cpus_per_cell:g} CPUs and {gpus:g} GPUs for a cell"
                   f" (the biggest has {biggest.get('CPU', 0):g} CPUs and {biggest.get('GPU', 0):g} GPUs); lower"
                   " --cpus-per-cell / --gpus-per-cell")
        if address == "local":
            raise UserError(message)
        info["warning"] = message + "; the tasks wait for the autoscaler to add such a node"
    return info


class RayExecutor:
    """Runs a plan's cells as Ray tasks (see the module's docstring).

    ``check`` refuses what needs no cluster to refuse (the settings, Ray missing, nothing at the
    address) in seconds, before the run is planned; ``run`` starts or joins the cluster, runs the
    tasks, shuts the connection down (a local cluster with it) and returns what they did. Both raise
    UserError (one line, exit 2; a task's UserError prefixed by its cell); ``run`` raises TaskFailed
    for any other failure of a task, after the other tasks finished.
    """

    def __init__(self, settings: RaySettings, *, store: StoreOptions, plugins: list[str], command: str | None,
                 quiet: bool = False, echo: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.store = store
        self.plugins = list(plugins)
        self.command = command
        self.quiet = quiet
        self.echo = echo
        self.address: str | None = None  # set by check: "local" (a new cluster), or where to join one
        self._origin = ""
        self._ray: Any = None

    def check(self, config: RunConfig) -> None:
        check_settings(self.settings, config)
        self._ray = _import_ray()
        if self.settings.address:
            self.address, self._origin = self.settings.address, f"--ray-address {self.settings.address}"
        elif os.environ.get("RAY_ADDRESS"):
            self.address, self._origin = os.environ["RAY_ADDRESS"], f"$RAY_ADDRESS={os.environ['RAY_ADDRESS']}"
        else:
            self.address, self._origin = "local", "a local Ray cluster"
        if self.address != "local":
            _check_reachable(self.address, self._origin)

    def run(self, config: RunConfig, plan: Plan) -> Outcome:
        if self.address is None:
            self.check(config)
        ray, address = self._ray, self.address
        assert address is not None
        tasks = plan_tasks(plan)
        _connect(ray, address, self._origin, self.quiet)
        try:
            settings = resolve_gpus(self.settings, config, ray.cluster_resources().get("GPU", 0))
            cluster = _cluster(ray, settings, address)
            where = {"local": "a new local cluster", "auto": "the cluster of this node"}.get(address, f"the cluster at {address}")
            nodes = f"{cluster['nodes']} node{'s' if cluster['nodes'] != 1 else ''}"
            self.echo(f"ray: {where}, {nodes}, {cluster['cluster_cpus']:g} CPUs, {cluster['cluster_gpus']:g} GPUs;"
                      f" {len(tasks)} tasks, {settings.cpus_per_cell:g} CPU and {cluster['gpus_per_cell']:g} GPU per cell,"
                      f" {cluster['workers']} at a time")
            if "warning" in cluster:
                self.echo(f"warning: {cluster['warning']}")
            cluster["tasks"] = len(tasks)
            outcome = _submit_and_wait(ray, config, tasks, settings, cluster, self.store, self.plugins, self.command,
                                       self.quiet, self.echo)
            if not self.quiet:
                time.sleep(1.0)  # the workers' last stage lines are still on their way (Ray forwards logs by polling)
            return outcome
        finally:
            ray.shutdown()


def _submit_and_wait(ray: Any, config: RunConfig, tasks: list[Task], settings: RaySettings, cluster: dict[str, Any],
                     store: StoreOptions, plugins: list[str], command: str | None, quiet: bool,
                     echo: Callable[[str], None]) -> Outcome:
    # A GPU worker that served a model exits after its task, so its memory goes back to the device.
    gpus = settings.gpus_per_cell or 0.0
    remote = ray.remote(max_calls=1 if gpus > 0 else 0)(run_task)
    refs: list[Any] = []
    for task in tasks:
        options = store if task.after is None else store.after_preparation()
        payload = {"config": config, "kind": task.kind, "cells": task.cells, "label": task.label, "plugins": list(plugins),
                   "store": options, "executor": {**cluster, "task": task.label}, "command": command, "quiet": quiet}
        after = [refs[task.after]] if task.after is not None else []
        refs.append(remote.options(
            name=task.label, num_cpus=settings.cpus_per_cell, num_gpus=gpus,
            max_retries=settings.max_retries, retry_exceptions=False,
        ).remote(payload, *after))
    index = {ref: i for i, ref in enumerate(refs)}
    results: dict[int, dict[str, Any]] = {}
    failures: dict[int, BaseException] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            i = index[ref]
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                failures[i] = exc.cause if isinstance(exc.cause, BaseException) else exc
            except ray.exceptions.RayError as exc:  # the worker or its node died, retries spent
                failures[i] = exc
            if quiet:
                continue
            if i in results:
                report = results[i]
                echo(f"  done    {tasks[i].label}: {len(report['records'])} records, on {report['host']}"
                     f" in {report['seconds']:.1f}s")
            else:
                echo(f"  failed  {tasks[i].label}: {_one_line(failures[i])}")
    if failures:
        _raise_first(tasks, failures)
    outcome = Outcome()
    for i in range(len(tasks)):
        outcome.records += [Path(p) for p in results[i]["records"]]
        outcome.stage_log += results[i]["stage_log"]
        outcome.tasks.append({k: v for k, v in results[i].items() if k not in ("records", "stage_log")})
    return outcome


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raise_first(tasks: list[Task], failures: dict[int, BaseException]) -> None:
    """One line for the first failed task (a preparation before the cells that waited for it)."""
    first = min(failures)
    others = len(failures) - 1
    more = f" (and {others} more task{'s' if others > 1 else ''} failed)" if others else ""
    exc = failures[first]
    label = tasks[first].label
    if isinstance(exc, UserError):
        raise UserError(f"{label}: {exc}{more}") from None
    hint = "; rerun the same command to resume, or with --executor local to see the traceback"
    raise TaskFailed(f"{label} failed in its Ray task: {_one_line(exc)}{more}{hint}") from None


# ---- the task, in a Ray worker -------------------------------------------------------------------
_LOADED_PLUGINS: set[str] = set()  # a worker runs many tasks: a plugin registers its names once


def _load_plugins(plugins: list[str]) -> None:
    from spd_bench.registry import load_plugin

    for plugin in plugins:
        if plugin not in _LOADED_PLUGINS:
            load_plugin(plugin)
            _LOADED_PLUGINS.add(plugin)


def _task_reporter(quiet: bool) -> Any:
    """Stage lines to the worker's stdout (Ray shows them on the driver, prefixed by the task);
    no progress bars."""
    from spd_bench.engine.pipeline import Reporter

    class TaskReporter(Reporter):
        def stage(self, cell: str, stage: str, cached: bool, seconds: float) -> None:
            state = "cached" if cached else f"computed in {seconds:.1f}s"
            print(f"  {stage:<8} {cell}: {state}", flush=True)

    return Reporter() if quiet else TaskReporter()


def task_plan(config: RunConfig, cells: list[CellId]) -> Plan:
    """The run's plan made again from its config (as the driver made it), holding only ``cells``."""
    from spd_bench.engine.plan import make_plan

    plan = make_plan(config)
    by_id = {cell_id(cell): cell for cell in plan.cells}
    missing = [c for c in cells if c not in by_id]
    if missing:
        raise UserError(f"cell {missing[0]} is not in the plan this Ray worker made from the run's config (on"
                        f" {socket.gethostname()}): install the same spd-bench and plugins on every node")
    plan.cells = [by_id[c] for c in cells]
    return plan


def run_task(payload: dict[str, Any], *_after: Any) -> dict[str, Any]:
    """One task, in a Ray worker: load the plugins, remake the plan for the task's cells, run them
    through the pipeline on the shared store; returns the records written and the stage log.
    ``_after``: the preparation task's result, which Ray waits for before starting this one."""
    if not payload["executor"]["gpus_per_cell"]:
        # Ray leaves a node's GPUs visible to a task that asked for none: such a cell runs on CPUs and
        # leaves the GPUs to the tasks Ray gave them to (before anything initialises CUDA).
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from spd_bench.engine.pipeline import Pipeline, cell_label

    started = time.time()
    _load_plugins(payload["plugins"])
    config = payload["config"]
    plan = task_plan(config, payload["cells"])
    store = payload["store"].open(Path(config.cache_dir))
    executor = {**payload["executor"], "host": socket.gethostname(), "devices": _accelerators()}
    pipeline = Pipeline(config, plan, store, _task_reporter(payload["quiet"]), executor_info=executor,
                        command=payload["command"])
    if payload["kind"] == "prepare":
        cell = plan.cells[0]
        pipeline.prepare(cell, plan.methods[cell.method], cell_label(cell))
        records: list[Path] = []
    else:
        records = pipeline.run()
    return {"label": payload["label"], "records": [str(p) for p in records], "stage_log": pipeline.stage_log,
            "host": socket.gethostname(), "pid": os.getpid(), "backend": plan.backend,
            "engine": plan.engine_settings, "devices": executor["devices"], "seconds": time.time() - started}


def _accelerators() -> dict[str, list[str]]:
    """The devices Ray gave this task (GPU ids as the node numbers them); empty outside Ray."""
    try:
        import ray

        ids = ray.get_runtime_context().get_accelerator_ids()
    except Exception:  # noqa: BLE001 - provenance only
        return {}
    return {kind: [str(i) for i in values] for kind, values in ids.items() if values}
