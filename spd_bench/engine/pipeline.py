"""Run a plan: for each cell, prepare -> sample -> curate -> fine-tune -> score -> record.

Every stage is a cached artifact keyed by its inputs (see store.py), so a re-run does no model
work, an interrupted run resumes at the first missing stage, and base scores are shared.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from spd_bench.config import RunConfig, stable_hash, to_dict
from spd_bench.engine.plan import Cell, Plan
from spd_bench.results import EvalSettings, ResultRecord, record_relpath
from spd_bench.store import ArtifactStore, StageKey, atomic_write_json, atomic_write_text, stage_key

if TYPE_CHECKING:
    from spd_bench.backends.protocol import Backend
    from spd_bench.models import LoadedModel

STAGE_VERSIONS = {"prepare": 1, "sample": 1, "curate": 1, "train": 1, "score": 2}  # score 2: the trusted code verdict
STAGES = tuple(STAGE_VERSIONS)


class Reporter:
    """Where the pipeline says what it does; the CLI passes a rich-backed one."""

    def cell(self, index: int, total: int, label: str) -> None:
        pass

    def stage(self, cell: str, stage: str, cached: bool, seconds: float) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n: None


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    result = {"python": platform.python_version()}
    for name in ("spd-bench", "torch", "transformers", "peft", "lm_eval", "evalplus", "datasets"):
        try:
            result[name] = version(name)
        except PackageNotFoundError:
            result[name] = "not installed"
    return result


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class Pipeline:
    def __init__(self, config: RunConfig, plan: Plan, store: ArtifactStore, reporter: Reporter | None = None) -> None:
        self.config = config
        self.plan = plan
        self.store = store
        self.reporter = reporter or Reporter()
        self.output = Path(config.output_dir)
        self._backend: Backend | None = None
        self._sources: dict[str, Any] = {}
        self._eval: dict[str, Any] = {}
        self._source_keys: dict[str, str] = {}
        self.records: list[Path] = []
        self.stage_log: list[dict[str, Any]] = []

    # ---- inputs -------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The model, resolved once into its backend on first need (a fully cached run never loads it)."""
        if self._backend is None:
            from spd_bench.backends import load_backend

            self._backend = load_backend(self.config.model, Path(self.config.cache_dir), self.config.device, self.config.dtype)
        return self._backend

    @property
    def loaded(self) -> LoadedModel:
        """The Hugging Face model object behind the backend: fine-tuning and SPD's extraction use it."""
        from spd_bench.backends.hf import HFBackend

        backend = self.backend
        if not isinstance(backend, HFBackend) or backend.loaded is None:
            raise TypeError(f"training needs the hf backend's model, not the {backend.name} backend")
        return backend.loaded

    @property
    def model_key(self) -> str:
        if not hasattr(self, "_model_key"):
            from spd_bench.models import resolve_model_path

            self._model_key = resolve_model_path(self.config.model, Path(self.config.cache_dir))[2]
        return self._model_key

    def data_context(self) -> Any:
        from spd_bench.tasks import DataContext

        return DataContext(cache_dir=Path(self.config.cache_dir), paths=dict(self.config.data))

    def source_data(self, name: str) -> Any:
        if name not in self._sources:
            from spd_bench.tasks import LoadedSource, check_disjoint, load_source

            data = load_source(self.plan.sources[name], self.data_context())
            train = data.train if self.config.n_train is None else data.train[: self.config.n_train]
            prompt_format = self._source_prompt_format(name)
            data = LoadedSource(
                train=self._render(train, prompt_format), calibration=self._render(data.calibration, prompt_format),
                layer=data.layer, details={**data.details, "n_train": len(train), "prompt_format": prompt_format},
            )
            for task_name, spec in self.plan.tasks.items():
                check_disjoint(data, self.eval_data(task_name).items, task_name)
            self._sources[name] = data
        return self._sources[name]

    def eval_data(self, name: str) -> Any:
        if name not in self._eval:
            from spd_bench.tasks import load_eval

            task = self.plan.tasks[name]
            data = load_eval(task, self.data_context(), self.config.limit)
            data.items = self._render(data.items, task.prompt_format)
            data.details = {**data.details, "items_hash": stable_hash(data.items)}
            self._eval[name] = data
        return self._eval[name]

    def _source_prompt_format(self, source: str) -> str:
        """A training source is rendered like the tasks it trains for."""
        formats = {t.prompt_format for t in self.plan.tasks.values() if t.training_source == source}
        return formats.pop() if len(formats) == 1 else "plain"

    def _render(self, items: list[dict[str, Any]], prompt_format: str) -> list[dict[str, Any]]:
        if prompt_format == "plain":
            return items
        from spd_bench.models import load_tokenizer, resolve_model_path
        from spd_bench.prompts import render_items

        if not hasattr(self, "_tokenizer"):
            self._tokenizer = load_tokenizer(resolve_model_path(self.config.model, Path(self.config.cache_dir))[0])
        return render_items(items, self._tokenizer, prompt_format)

    # ---- stages ---------------------------------------------------------------------------
    def _stage(self, label: str, key: StageKey, build: Callable[[Path], dict[str, Any] | None]) -> Path:
        started = time.time()
        path, cached = self.store.get_or_build(key, build)
        seconds = time.time() - started if not cached else self.store.manifest(key).get("seconds", 0.0)
        self.reporter.stage(label, key.stage, cached, time.time() - started)
        self.stage_log.append({"cell": label, "stage": key.stage, "key": key.key, "cached": cached, "seconds": seconds})
        return path

    def _context(self, cell: Cell, prepared: Path | None) -> Any:
        from spd_bench.method import MethodContext

        return MethodContext(
            load_model=lambda: self.loaded, source=self.plan.sources[cell.source], data=self.source_data(cell.source),
            config=self.config, seed=cell.seed, prepared=prepared, progress=self.reporter.progress,
        )

    def run_cell(self, cell: Cell) -> None:
        method = self.plan.methods[cell.method]
        label = cell_label(cell)
        adapter_key: StageKey | None = None
        adapter: Path | None = None
        budget: dict[str, Any] = {}
        keys: dict[str, str | None] = {}
        if method.trains:
            adapter_key, adapter, budget, keys = self._train_stages(cell, method, label)
        for task_name, domain in cell.tasks:
            score_dir, score_key = self._score(task_name, method, adapter_key, adapter, label)
            stage_keys = {**keys, "score": score_key.key}
            self._write_record(cell, method, task_name, domain, score_dir, stage_keys, budget)

    def _source_key(self, name: str) -> str:
        if name not in self._source_keys:
            data = self.source_data(name)
            self._source_keys[name] = stable_hash(
                {"spec": self.plan.sources[name].to_dict(), "train": data.train, "calibration": data.calibration}
            )
        return self._source_keys[name]

    def _train_stages(self, cell: Cell, method: Any, label: str) -> tuple[StageKey, Path | None, dict[str, Any], dict[str, str | None]]:
        cfg = self.config
        source = self.plan.sources[cell.source]
        base_inputs = {"model": self.model_key, "source": self._source_key(cell.source)}
        method_id = {"method": method.name, "version": method.version, "options": method.options_dict()}
        sampling_id = {**method_id, "options": method.sampling_options_dict()}
        prepared: Path | None = None
        prepare_key: StageKey | None = None
        if method.has_prepare:
            prepare_cfg = {**sampling_id, "seed": cell.seed if method.prepare_uses_seed else None}
            prepare_key = stage_key("prepare", STAGE_VERSIONS["prepare"], prepare_cfg, base_inputs)
            prepared = self._stage(label, prepare_key, lambda out: method.prepare(self._context(cell, None), out))
        ctx = self._context(cell, prepared)
        plan = method.sampling(ctx)
        max_new = cfg.decoding.max_new_tokens or source.max_new_tokens
        sample_cfg = {**sampling_id, "plan": asdict(plan), "max_new_tokens": max_new, "stop": list(source.stop),
                      "seed": cell.seed, "batch_size": cfg.gen_batch_size}
        sample_key = stage_key("sample", STAGE_VERSIONS["sample"], sample_cfg, {**base_inputs, "prepare": prepare_key.key if prepare_key else None})

        def build_samples(out: Path) -> dict[str, Any]:
            from spd_bench.backends.protocol import GenerationPlan

            prompts = [(item["id"], item["prompt"]) for item in ctx.data.train]
            generation = GenerationPlan(
                max_new_tokens=max_new, temperature=plan.temperature, top_p=plan.top_p, top_k=plan.top_k,
                n=plan.n_per_prompt, seed=(cell.seed or 0) * 1000, stop=tuple(source.stop), batch_size=cfg.gen_batch_size,
            )
            description = f"{label}: sample" + (f" x{plan.n_per_prompt}" if plan.n_per_prompt > 1 else "")
            with self.reporter.progress(description, len(prompts) * plan.n_per_prompt) as tick:
                texts = self.backend.generate(method.generation_handle(ctx), [p for _, p in prompts], generation, tick)
            rows = [
                {"prompt_id": pid, "prompt": prompt, "completion": completions[index], "sample_index": index}
                for index in range(plan.n_per_prompt)
                for (pid, prompt), completions in zip(prompts, texts)
            ]
            atomic_write_text(out / "samples.jsonl", _jsonl(rows))
            return {"n_samples": len(rows)}

        sample_dir = self._stage(label, sample_key, build_samples)
        curate_key = stage_key("curate", STAGE_VERSIONS["curate"], method_id, {"sample": sample_key.key})

        def build_curated(out: Path) -> dict[str, Any]:
            from spd_bench.method import Sample

            samples = [Sample(**row) for row in _read_jsonl(sample_dir / "samples.jsonl")]
            kept = method.curate(samples, ctx)
            atomic_write_text(out / "corpus.jsonl", _jsonl([asdict(s) for s in kept]))
            return {"n_samples": len(samples), "n_kept": len(kept)}

        curate_dir = self._stage(label, curate_key, build_curated)
        train_spec = method.train_spec(ctx)
        train_cfg = {"train": to_dict(cfg.train), "spec": asdict(train_spec), "seed": cell.seed}
        train_key = stage_key("train", STAGE_VERSIONS["train"], train_cfg, {"model": self.model_key, "corpus": curate_key.key})

        def build_adapter(out: Path) -> dict[str, Any]:
            from spd_bench.engine.finetune import train_lora

            corpus = _read_jsonl(curate_dir / "corpus.jsonl")
            pairs = [(row["prompt"], row["completion"]) for row in corpus]
            if not pairs:  # a filter kept nothing: the "fine-tuned" model is the base model, recorded as such
                return {"n_examples": 0, "n_tokens": 0, "epochs": cfg.train.epochs, "steps": 0, "empty_corpus": True}
            total = -(-len(pairs) // cfg.train.batch_size) * cfg.train.epochs
            with self.reporter.progress(f"{label}: fine-tune", total) as tick:
                info = train_lora(
                    ctx.model.model, ctx.model.tokenizer, pairs, cfg.train, train_spec, cell.seed or 0, out,
                    progress=lambda step, _total: tick(1),
                )
            return info

        adapter_dir = self._stage(label, train_key, build_adapter)
        info = self.store.manifest(train_key)["info"]
        # Whether anything was trained is recorded, never guessed from which files exist: a trained
        # stage missing its adapter fails the store's verification and is rebuilt instead.
        adapter = None if info.get("empty_corpus") else adapter_dir
        curate_info = self.store.manifest(curate_key)["info"]
        budget = {
            "n_examples": info["n_examples"], "n_tokens": info["n_tokens"], "epochs": info["epochs"],
            "n_generated": curate_info["n_samples"], "n_kept": curate_info["n_kept"],
        }
        keys = {"prepare": prepare_key.key if prepare_key else None, "sample": sample_key.key,
                "curate": curate_key.key, "train": train_key.key}
        return train_key, adapter, budget, keys

    def score_settings(self, task: Any, temperature: float = 0.0) -> Any:
        from spd_bench.scoring import ScoreSettings

        return ScoreSettings(
            temperature=temperature,
            batch_size=self.config.eval_batch_size,
            max_new_tokens=task.max_new_tokens,
            allow_code_execution=self.config.allow_code_execution,
            work_dir=Path(self.config.cache_dir) / "scratch",
            timeout_s=self.config.score.timeout_s,
            memory_mb=self.config.score.memory_mb,
            n_samples=self.config.score.n_samples,
        )

    def _score(self, task_name: str, method: Any, adapter_key: StageKey | None, adapter: Path | None, label: str) -> tuple[Path, StageKey]:
        task = self.plan.tasks[task_name]
        data = self.eval_data(task_name)
        settings = self.score_settings(task, method.eval_temperature())
        settings_cfg = {"temperature": settings.temperature, "max_new_tokens": settings.max_new_tokens, "n_samples": settings.n_samples}
        if task.scorer == "evalplus":  # a memory-hungry correct program can fail under a lower limit
            settings_cfg["memory_mb"] = settings.memory_mb
        score_cfg = {"task": task.to_dict(), "items": data.details["items_hash"], "layer": data.layer, "limit": self.config.limit, "settings": settings_cfg}
        key = stage_key("score", STAGE_VERSIONS["score"], score_cfg, {"model": self.model_key, "adapter": adapter_key.key if adapter_key else None})

        def build(out: Path) -> dict[str, Any]:
            from spd_bench.scoring import get_scorer

            from spd_bench.backends import handle_for_adapter

            scorer = get_scorer(task.scorer)
            settings.device = self.backend.device
            output = scorer.score_model(self.backend, handle_for_adapter(adapter), task, data.items, settings)
            atomic_write_text(out / "samples.jsonl", _jsonl(output.per_item))
            atomic_write_json(out / "score.json", {
                "metrics": output.metrics, "primary_metric": output.primary_metric,
                "higher_is_better": output.higher_is_better, "native": output.native,
                "data_layer": data.layer, "data_details": data.details, "n_items": len(data.items),
                "settings": settings_cfg,
            })
            return {"task": task_name, "metrics": output.metrics}

        return self._stage(f"{label} -> {task_name}", key, build), key

    def _write_record(self, cell: Cell, method: Any, task_name: str, domain: str, score_dir: Path,
                      stage_keys: dict[str, str | None], budget: dict[str, Any]) -> None:
        score = json.loads((score_dir / "score.json").read_text())
        task = self.plan.tasks[task_name]
        timings = {entry["stage"]: round(entry["seconds"], 3) for entry in self.stage_log if entry["key"] in stage_keys.values()}
        cached = {entry["stage"]: entry["cached"] for entry in self.stage_log if entry["key"] in stage_keys.values()}
        record = ResultRecord(
            model=self.config.model,
            method=cell.method,
            training_source=cell.source,
            task=task_name,
            domain=domain,
            seed=cell.seed,
            metrics=score["metrics"],
            primary_metric=score["primary_metric"],
            higher_is_better=score["higher_is_better"],
            eval_settings=EvalSettings(
                prompt_format=task.prompt_format, decoding=score["settings"], limit=self.config.limit,
                data_layer=score["data_layer"], n_items=score["n_items"], scorer=task.scorer,
            ),
            method_info={
                "external_signal": method.external_signal, "budget": budget, "options": method.options_dict(),
                "version": method.version, "description": method.description,
            },
            config=to_dict(self.config),
            config_hash=self.config.hash(),
            provenance={
                "versions": software_versions(), "git_commit": git_commit(), "model_key": self.model_key,
                "device": self.config.device if self._backend is None else self._backend.device,
                "dtype": self.config.dtype if self._backend is None else self._backend.dtype,
                "platform": platform.platform(), "stage_keys": stage_keys, "stage_seconds": timings,
                "stage_cached": cached, "data_details": score["data_details"],
                "command": "spd-bench " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "spd-bench" else None,
            },
            native=score["native"],
        )
        rel = record_relpath(record)
        path = self.output / rel
        samples_name = path.stem + ".samples.jsonl"
        record.samples_file = samples_name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path.parent / samples_name, (score_dir / "samples.jsonl").read_text())
        atomic_write_json(path, record.to_dict())
        self.records.append(path)

    def run(self) -> list[Path]:
        _ = self.model_key  # a missing model fails here, before any data or model work
        for task_name in self.plan.tasks:  # missing data fails now, not after hours of work
            self.eval_data(task_name)
        for source_name in self.plan.sources:
            self.source_data(source_name)
        for index, cell in enumerate(self.plan.cells, start=1):
            self.reporter.cell(index, len(self.plan.cells), cell_label(cell))
            self.run_cell(cell)
        return self.records


def cell_label(cell: Cell) -> str:
    return cell.method if cell.source is None else f"{cell.method}/{cell.source}/seed{cell.seed}"
