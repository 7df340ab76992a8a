"""Run a plan: prepare -> sample -> curate -> train -> score -> record for every cell.

Stages run grouped by the model that computes them (``Pipeline.run``), so an inference engine that
is expensive to start (vLLM) starts once per model, not once per cell. Every stage is a cached artifact keyed by its inputs (see store.py), so a re-run does no model
work, an interrupted run resumes at the first missing stage, and base scores are shared. Each
stage is one method taking the outputs of the stages before it and returning its own
(``Artifact``).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from spd_bench.backends.protocol import BASE, GenerationPlan, handle_for_adapter
from spd_bench.config import RunConfig, stable_hash, to_dict
from spd_bench.engine.inputs import RunInputs
from spd_bench.engine.plan import Cell, Plan
from spd_bench.engine.records import build_record, provenance, read_score, write_record
from spd_bench.method import MethodContext, Sample
from spd_bench.store import Artifact, ArtifactStore, StageKey, atomic_write_json, atomic_write_text, stage_key

if TYPE_CHECKING:
    from spd_bench.backends.protocol import Backend, Handle
    from spd_bench.method import Method, SamplingPlan, TrainSpec
    from spd_bench.models import LoadedModel
    from spd_bench.scoring import ScoreSettings
    from spd_bench.tasks import LoadedData, SourceSpec, TaskSpec

# score 2: the trusted code verdict; score 3: the scoring library's own files kept, math-verify and
# few-shot settings (bump it whenever a scorer's answer extraction or metrics change: they are not in
# the key); train 2: TRL's SFTTrainer instead of a hand-written loop
STAGE_VERSIONS = {"prepare": 1, "sample": 1, "curate": 1, "train": 2, "score": 3}
_TRAIN_NOT_KEYED = frozenset({"save_steps", "report_to"})  # how a fine-tune is checkpointed and watched, not what it computes
STAGES = tuple(STAGE_VERSIONS)
REFERENCE_METHOD = "raw_sd"  # the corpus every trained method's is compared with (Pipeline.diagnose)


class Reporter:
    """Where the pipeline says what it does; the CLI passes a rich-backed one."""

    def phase(self, description: str) -> None:
        """A group of stages starts (stages run grouped by the model that computes them)."""

    def stage(self, cell: str, stage: str, cached: bool, seconds: float) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n: None


@dataclass(frozen=True)
class Trained:
    """A cell's model as scoring and its records see it: the adapter, what went into it, and the stage keys."""

    adapter_key: str | None  # the train stage's key; None for the base model
    adapter: Path | None  # None: the base model (untrained, or a filter kept no sample)
    budget: dict[str, Any]
    training: dict[str, Any]  # the fine-tune's loss and learning-rate curve, as the train stage logged it
    stage_keys: dict[str, str | None]
    diagnostics: dict[str, Any] = field(default_factory=dict)  # reporting only: Pipeline.diagnose


UNTRAINED = Trained(adapter_key=None, adapter=None, budget={}, training={}, stage_keys={})


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _method_id(method: Method) -> dict[str, Any]:
    """What identifies a method's behaviour in the curate stage's key: name, version and every option."""
    return {"method": method.name, "version": method.version, "options": method.options_dict()}


def _sampling_id(method: Method) -> dict[str, Any]:
    """The method's identity for prepare and sample keys: options that act after sampling left out."""
    return {**_method_id(method), "options": method.sampling_options_dict()}


def _free_memory() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _describe(handle: Any) -> str:
    projectors = getattr(handle, "projectors", None)
    return f"the model projected by {Path(projectors).parent.name}" if projectors else str(handle)


def cell_label(cell: Cell) -> str:
    return cell.method if cell.source is None else f"{cell.method}/{cell.source}/seed{cell.seed}"


class Pipeline:
    def __init__(self, config: RunConfig, plan: Plan, store: ArtifactStore, reporter: Reporter | None = None,
                 executor_info: dict[str, Any] | None = None, command: str | None = None,
                 reference_corpus: bool = False) -> None:
        """``executor_info``: where the cells run (executors.py; provenance only, never in a key or a
        metric); ``command``: the command the records keep (default: this process's command line);
        ``reference_corpus``: compare corpora with raw_sd's even when raw_sd is not among the plan's
        methods (a sweep runs it once, in its reference folder), its sample stage built or reused here."""
        self.config = config
        self.plan = plan
        self.store = store
        self.reporter = reporter or Reporter()
        self.executor_info = executor_info
        self.command = command
        self.reference_corpus = reference_corpus
        self.output = Path(config.output_dir)
        self.inputs = RunInputs(config, plan, lambda: self._model[0])
        self._backend: Backend | None = None
        self._training_model: LoadedModel | None = None  # a non-hf backend's run only
        self.records: list[Path] = []
        self.reference_samples: dict[tuple[str | None, int | None], Artifact] = {}  # raw_sd's corpora run elsewhere
        self.stage_log: list[dict[str, Any]] = []

    # ---- the model ----------------------------------------------------------------------
    @cached_property
    def _model(self) -> tuple[Path, str, str]:
        """(folder, source, identity) of the run's model: resolved, and its folder hashed, once per run."""
        from spd_bench.models import resolve_model_path

        return resolve_model_path(self.config.model, Path(self.config.cache_dir))

    @property
    def model_key(self) -> str:
        """The model's content-derived identity, part of every stage key that depends on the model."""
        return self._model[2]

    @cached_property
    def model_provenance(self) -> dict[str, Any] | None:
        """Where a built-in model's weights came from (a converted model's package and file hash), for each record."""
        from spd_bench.builtin_models import BUILTIN_MODELS

        if self.config.model not in BUILTIN_MODELS:
            return None
        describe = BUILTIN_MODELS.get(self.config.model).provenance
        return describe(self._model[0]) if describe is not None else None

    @property
    def backend(self) -> Backend:
        """The model, resolved once into its backend on first need (a fully cached run never loads it)."""
        if self._backend is None:
            from spd_bench.backends import load_backend

            options = asdict(self.config.vllm) if self.plan.backend == "vllm" else None
            self._backend = load_backend(self.config.model, Path(self.config.cache_dir), self.config.device,
                                         self.config.dtype, name=self.plan.backend, options=options)
        return self._backend

    @property
    def loaded(self) -> LoadedModel:
        """The Hugging Face model object: fine-tuning and SPD's extraction use it (the hf backend's own
        model; another backend's runs load it beside the engine, only for those stages)."""
        from spd_bench.backends.hf import HFBackend

        if self.plan.backend == "hf":
            backend = self.backend
            assert isinstance(backend, HFBackend) and backend.loaded is not None
            return backend.loaded
        if self._training_model is None:
            from spd_bench.models import load_model

            self._training_model = load_model(self.config.model, Path(self.config.cache_dir), self.config.device,
                                              self.config.dtype)
        return self._training_model

    def _engine_phase(self) -> None:
        """Before an engine serves: a separate backend frees the training model (a GPU holds one of them)."""
        if self.plan.backend != "hf" and self._training_model is not None:
            self._training_model = None
            _free_memory()

    def _training_phase(self) -> None:
        """Before training: a separate backend shuts its engine down (it restarts for evaluation)."""
        if self.plan.backend != "hf" and self._backend is not None:
            self._backend.close()

    # ---- the run ------------------------------------------------------------------------
    def run(self) -> list[Path]:
        """Every stage of every cell, in the order that starts each inference engine once: prepare
        (training model); base-model sampling and base scoring (one engine); each projected model's
        sampling (one engine each); curate and train (training model); every adapter's scoring (one
        engine); then the records, in cell order. The store keeps each stage cached and resumable."""
        _ = self.model_key  # a missing model fails here, before any data or model work
        for task_name in self.plan.tasks:  # missing data fails now, not after hours of work
            self.inputs.eval_data(task_name)
        for source_name in self.plan.sources:
            self.inputs.source_data(source_name)
        cells = list(enumerate(self.plan.cells))
        trained_cells = [(i, cell) for i, cell in cells if self.plan.methods[cell.method].trains]
        if any(self.plan.methods[cell.method].has_prepare for _i, cell in trained_cells):
            self.reporter.phase("prepare (the training model)")
        prepared = {i: self.prepare(cell, self.plan.methods[cell.method], cell_label(cell))
                    for i, cell in trained_cells if self.plan.methods[cell.method].has_prepare}
        contexts = {i: self._context(cell, prepared[i].folder if i in prepared else None) for i, cell in trained_cells}
        subspaces = {i: self.diagnose_subspace(cell, self.plan.methods[cell.method], contexts[i], prepared[i])
                     for i, cell in trained_cells if i in prepared}
        scores: dict[tuple[int, str], Artifact] = {}
        samples = self._sample_by_engine(trained_cells, contexts, prepared, cells, scores)
        self._training_phase()
        if trained_cells:
            self.reporter.phase("curate and fine-tune (the training model)")
        models: dict[int, Trained] = {i: UNTRAINED for i, cell in cells if not self.plan.methods[cell.method].trains}
        for i, cell in trained_cells:
            models[i] = self.train_cell(cell, self.plan.methods[cell.method], contexts[i], prepared.get(i), samples[i])
            reference = next((samples[j] for j, other in trained_cells if other.method == REFERENCE_METHOD
                              and (other.source, other.seed) == (cell.source, cell.seed)),
                             self.reference_samples.get((cell.source, cell.seed)))
            models[i] = replace(models[i], diagnostics=self.diagnose(cell, self.plan.methods[cell.method], contexts[i],
                                                                     samples[i], reference, subspaces.get(i)))
        self._engine_phase()
        if trained_cells:
            self.reporter.phase(f"score the fine-tuned models ({self.plan.backend} backend)")
        for i, cell in trained_cells:
            for task_name, _domain in cell.tasks:
                scores[(i, task_name)] = self.score(task_name, self.plan.methods[cell.method], models[i], cell_label(cell))
        for i, cell in cells:
            for task_name, domain in cell.tasks:
                self.record(cell, self.plan.methods[cell.method], task_name, domain, scores[(i, task_name)], models[i])
        return self.records

    def _sample_by_engine(self, trained_cells: list[tuple[int, Cell]], contexts: dict[int, MethodContext],
                          prepared: dict[int, Artifact], cells: list[tuple[int, Cell]],
                          scores: dict[tuple[int, str], Artifact]) -> dict[int, Artifact]:
        """The sample stages grouped by the model that generates them; the untrained cells' scores
        (into ``scores``) join the base model's group."""
        groups: dict[Handle, list[tuple[int, Cell]]] = {BASE: []}
        for i, cell in trained_cells:
            groups.setdefault(self.plan.methods[cell.method].generation_handle(contexts[i]), []).append((i, cell))
        samples: dict[int, Artifact] = {}
        untrained = [(i, cell) for i, cell in cells if not self.plan.methods[cell.method].trains]
        references = self._missing_references(trained_cells)
        for handle, members in groups.items():
            if not members and not (handle == BASE and (untrained or references)):
                continue
            self._engine_phase()
            what = "sample from the base model and score it" if handle == BASE else f"sample from {_describe(handle)}"
            self.reporter.phase(f"{what} ({self.plan.backend} backend)")
            for i, cell in members:
                method = self.plan.methods[cell.method]
                samples[i] = self.sample(cell, method, contexts[i], prepared.get(i), cell_label(cell))
            if handle == BASE:
                for cell in references:
                    self.reference_samples[(cell.source, cell.seed)] = self.sample(
                        cell, self._reference_method, self._context(cell, None), None, cell_label(cell))
                for i, cell in untrained:
                    for task_name, _domain in cell.tasks:
                        scores[(i, task_name)] = self.score(task_name, self.plan.methods[cell.method], UNTRAINED,
                                                            cell_label(cell))
        return samples

    def _missing_references(self, trained_cells: list[tuple[int, Cell]]) -> list[Cell]:
        """raw_sd's cells whose corpus the diagnostics of this process's cells compare with but that
        another process runs (``--shard``, Ray tasks): their sample stage is built here too, once
        through the store (the other process reuses it), so a diagnostic never depends on which
        process ran first. None when raw_sd is neither one of the run's methods nor ``reference_corpus``."""
        if self._reference_method is None:
            return []
        present = {(cell.source, cell.seed) for _i, cell in trained_cells if cell.method == REFERENCE_METHOD}
        wanted = dict.fromkeys((cell.source, cell.seed) for _i, cell in trained_cells if cell.method != REFERENCE_METHOD)
        return [Cell(method=REFERENCE_METHOD, source=source, seed=seed) for source, seed in wanted
                if (source, seed) not in present]

    @cached_property
    def _reference_method(self) -> Method | None:
        """raw_sd as the run's plan builds it, or (``reference_corpus``) as make_plan would: same options,
        so its sample stage's key is the one raw_sd's own cell computes."""
        if REFERENCE_METHOD in self.plan.methods:
            return self.plan.methods[REFERENCE_METHOD]
        if not self.reference_corpus:
            return None
        from spd_bench.method import make_method

        return make_method(REFERENCE_METHOD, self.config.method_options.get(REFERENCE_METHOD))

    def train_cell(self, cell: Cell, method: Method, ctx: MethodContext, prepared: Artifact | None,
                   samples: Artifact) -> Trained:
        """curate -> train on a cell's samples: the cell's fine-tuned model."""
        label = cell_label(cell)
        corpus = self.curate(method, ctx, samples, label)
        adapter = self.train(cell, method, ctx, corpus, label)
        # Whether anything was trained is recorded, never guessed from which files exist: a trained
        # stage missing its adapter fails the store's verification and is rebuilt instead.
        return Trained(
            adapter_key=adapter.key.key,
            adapter=None if adapter.info.get("empty_corpus") else adapter.folder,
            budget={
                "n_examples": adapter.info["n_examples"], "n_tokens": adapter.info["n_tokens"], "epochs": adapter.info["epochs"],
                "n_generated": corpus.info["n_samples"], "n_kept": corpus.info["n_kept"],
            },
            training={key: adapter.info[key] for key in ("loss_first", "loss_last", "train_curve") if key in adapter.info},
            stage_keys={"prepare": prepared.key.key if prepared else None, "sample": samples.key.key,
                        "curate": corpus.key.key, "train": adapter.key.key},
        )

    # ---- stages ---------------------------------------------------------------------------
    def prepare(self, cell: Cell, method: Method, label: str) -> Artifact:
        """The method's preparation (e.g. SPD's projectors), shared across seeds unless the method uses the seed."""
        config = {**_sampling_id(method), "seed": cell.seed if method.prepare_uses_seed else None}
        key = stage_key("prepare", STAGE_VERSIONS["prepare"], config, self._base_inputs(cell))
        return self._stage(label, key, partial(self._prepare, method, cell))

    def sample(self, cell: Cell, method: Method, ctx: MethodContext, prepared: Artifact | None, label: str) -> Artifact:
        """Completions of the training prompts from the method's generation model: ``samples.jsonl``."""
        source = self.plan.sources[cell.source]
        plan = method.sampling(ctx)
        max_new = self._max_new_tokens(source)
        config = {**_sampling_id(method), "plan": asdict(plan), "max_new_tokens": max_new, "stop": list(source.stop),
                  "seed": cell.seed, "batch_size": self.config.gen_batch_size, **self._engine_id}
        inputs = {**self._base_inputs(cell), "prepare": prepared.key.key if prepared else None}
        key = stage_key("sample", STAGE_VERSIONS["sample"], config, inputs)
        generation = GenerationPlan(
            max_new_tokens=max_new, temperature=plan.temperature, top_p=plan.top_p, top_k=plan.top_k,
            n=plan.n_per_prompt, seed=(cell.seed or 0) * 1000, stop=tuple(source.stop), batch_size=self.config.gen_batch_size,
        )
        return self._stage(label, key, partial(self._generate, method, ctx, plan, generation, label))

    def curate(self, method: Method, ctx: MethodContext, samples: Artifact, label: str) -> Artifact:
        """The samples the method keeps to train on: ``corpus.jsonl``."""
        key = stage_key("curate", STAGE_VERSIONS["curate"], _method_id(method), {"sample": samples.key.key})
        return self._stage(label, key, partial(self._keep, method, ctx, samples.folder))

    def train(self, cell: Cell, method: Method, ctx: MethodContext, corpus: Artifact, label: str) -> Artifact:
        """A LoRA adapter fine-tuned on the corpus (none, recorded as ``empty_corpus``, when the corpus is empty)."""
        spec = method.train_spec(ctx)
        train = {k: v for k, v in to_dict(self.config.train).items() if k not in _TRAIN_NOT_KEYED}
        config = {"train": train, "spec": asdict(spec), "seed": cell.seed}
        key = stage_key("train", STAGE_VERSIONS["train"], config, {"model": self.model_key, "corpus": corpus.key.key,
                                                                    "dtype": self.plan.engine_settings.get("dtype")})
        checkpoints = Path(self.config.cache_dir) / "checkpoints" / key.key  # survives a crash; resumed from
        adapter = self._stage(label, key, partial(self._fine_tune, ctx, spec, corpus.folder, cell.seed or 0, label,
                                                  checkpoints))
        shutil.rmtree(checkpoints, ignore_errors=True)
        return adapter

    def score(self, task_name: str, method: Method, trained: Trained, label: str) -> Artifact:
        """The trained (or base) model scored on a task: ``score.json`` and per-item ``samples.jsonl``."""
        task = self.plan.tasks[task_name]
        data = self.inputs.eval_data(task_name)
        settings = self.score_settings(task, method.eval_temperature())
        settings_cfg = {"temperature": settings.temperature, "max_new_tokens": settings.max_new_tokens, "n_samples": settings.n_samples}
        if task.scorer == "evalplus":  # a memory-hungry correct program can fail under a lower limit
            settings_cfg["memory_mb"] = settings.memory_mb
        config = {"task": task.to_dict(), "items": data.details["items_hash"], "layer": data.layer, "limit": self.config.limit,
                  "settings": settings_cfg, **self._engine_id}
        key = stage_key("score", STAGE_VERSIONS["score"], config, {"model": self.model_key, "adapter": trained.adapter_key})
        build = partial(self._score_items, task_name, task, data, settings, settings_cfg, trained.adapter)
        return self._stage(f"{label} -> {task_name}", key, build)

    def record(self, cell: Cell, method: Method, task_name: str, domain: str, score: Artifact, trained: Trained) -> Path:
        """Write the (cell, task) result record and its per-item outputs; returns the record's path."""
        summary = read_score(score.folder)
        stage_keys = {**trained.stage_keys, "score": score.key.key}
        origin = provenance(
            model_key=self.model_key,
            device=self.config.device if self._backend is None else self._backend.device,
            dtype=self.config.dtype if self._backend is None else self._backend.dtype,
            stage_keys=stage_keys, stage_log=self.stage_log, data_details=summary["data_details"],
            engine=self.plan.engine_settings, executor=self.executor_info, command=self.command,
            cell=cell_label(cell), model_provenance=self.model_provenance,
        )
        record = build_record(config=self.config, cell=cell, method=method, task_name=task_name, task=self.plan.tasks[task_name],
                              domain=domain, score=summary, budget=trained.budget, training=trained.training,
                              provenance=origin, diagnostics=trained.diagnostics)
        path = write_record(record, self.output, score.folder)
        self.records.append(path)
        return path

    # ---- diagnostics (reporting only; their keys include the stages', never the reverse) ------
    def diagnose_subspace(self, cell: Cell, method: Method, ctx: MethodContext, prepared: Artifact) -> Artifact | None:
        """What the cell's projection does on its first training prompts (a method that generates
        from projectors only; others have none), on the training model."""
        from spd_bench.diagnostics import SUBSPACE_VERSION
        from spd_bench.diagnostics.stages import build_subspace
        from spd_bench.diagnostics.subspace import PROMPT_LIMIT

        projectors = getattr(method.generation_handle(ctx), "projectors", None)
        if projectors is None:
            return None
        prompts = [item["prompt"] for item in ctx.data.train[:PROMPT_LIMIT]]
        key = stage_key("diagnose_subspace", SUBSPACE_VERSION, {"prompts": stable_hash(prompts)},
                        {"prepare": prepared.key.key, "model": self.model_key,
                         "dtype": self.plan.engine_settings.get("dtype")})
        return self._stage(cell_label(cell), key, partial(build_subspace, lambda: self.loaded, Path(projectors), prompts),
                           report=False)

    def diagnose(self, cell: Cell, method: Method, ctx: MethodContext, samples: Artifact, reference: Artifact | None,
                 subspace: Artifact | None) -> dict[str, Any]:
        """The cell's record diagnostics: its generated corpus (against raw_sd's at the same seed and
        source when this run sampled it) and its subspace numbers (None without projectors)."""
        from spd_bench.diagnostics import CORPUS_VERSION
        from spd_bench.diagnostics.corpus import labels_note
        from spd_bench.diagnostics.stages import build_corpus

        source = self.plan.sources[cell.source]
        max_new = self._max_new_tokens(source)
        key = stage_key("diagnose_corpus", CORPUS_VERSION, {"kind": source.kind, "max_new_tokens": max_new},
                        {"sample": samples.key.key, "reference": reference.key.key if reference else None,
                         "source": self.inputs.source_key(cell.source)})
        build = partial(build_corpus, samples.folder, reference.folder if reference else None, ctx.data.train,
                        source.kind, self._model[0], max_new)
        corpus = self._stage(cell_label(cell), key, build, report=False)
        return {"corpus": {**corpus.info, "labels_note": labels_note(method.external_signal)},
                "subspace": subspace.info if subspace is not None else None}

    # ---- what the stages build ------------------------------------------------------------
    def _prepare(self, method: Method, cell: Cell, out: Path) -> dict[str, Any]:
        return method.prepare(self._context(cell, None), out)

    def _generate(self, method: Method, ctx: MethodContext, plan: SamplingPlan, generation: GenerationPlan, label: str,
                  out: Path) -> dict[str, Any]:
        prompts = [(item["id"], item["prompt"]) for item in ctx.data.train]
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

    def _keep(self, method: Method, ctx: MethodContext, samples_folder: Path, out: Path) -> dict[str, Any]:
        samples = [Sample(**row) for row in _read_jsonl(samples_folder / "samples.jsonl")]
        kept = method.curate(samples, ctx)
        atomic_write_text(out / "corpus.jsonl", _jsonl([asdict(s) for s in kept]))
        return {"n_samples": len(samples), "n_kept": len(kept)}

    def _fine_tune(self, ctx: MethodContext, spec: TrainSpec, corpus_folder: Path, seed: int, label: str,
                   checkpoints: Path, out: Path) -> dict[str, Any]:
        from spd_bench.engine.finetune import train_lora

        train = self.config.train
        pairs = [(row["prompt"], row["completion"]) for row in _read_jsonl(corpus_folder / "corpus.jsonl")]
        if not pairs:  # a filter kept nothing: the "fine-tuned" model is the base model, recorded as such
            return {"n_examples": 0, "n_tokens": 0, "epochs": train.epochs, "steps": 0, "empty_corpus": True}
        total = -(-len(pairs) // train.batch_size) * train.epochs
        with self.reporter.progress(f"{label}: fine-tune", total) as tick:
            return train_lora(ctx.model.model, ctx.model.tokenizer, pairs, train, spec, seed, out,
                              progress=lambda step, _total: tick(1), checkpoint_dir=checkpoints)

    def _score_items(self, task_name: str, task: TaskSpec, data: LoadedData, settings: ScoreSettings,
                     settings_cfg: dict[str, Any], adapter: Path | None, out: Path) -> dict[str, Any]:
        from spd_bench.scoring import get_scorer

        scorer = get_scorer(task.scorer)
        settings.device = self.backend.device
        output = scorer.score_model(self.backend, handle_for_adapter(adapter), task, data.items, settings)
        atomic_write_text(out / "samples.jsonl", _jsonl(output.per_item))
        for name, text in output.files.items():  # the scoring library's own files, listed under "files"
            atomic_write_text(out / name, text)
        atomic_write_json(out / "score.json", {
            "metrics": output.metrics, "primary_metric": output.primary_metric,
            "higher_is_better": output.higher_is_better, "native": output.native,
            "data_layer": data.layer, "data_details": data.details, "n_items": len(data.items),
            # lm-eval's own tasks decode as their configs say, not with the run's evaluation temperature
            "settings": ({"lm_eval_generation_kwargs": output.native["lm_eval_generation_kwargs"]}
                         if task.kind == "lm_eval" else settings_cfg),
            "files": sorted(output.files),
        })
        return {"task": task_name, "metrics": output.metrics}

    # ---- helpers --------------------------------------------------------------------------
    def _stage(self, label: str, key: StageKey, build: Callable[[Path], dict[str, Any] | None],
               report: bool = True) -> Artifact:
        """Reuse or build one stage through the store, logging it and (unless ``report`` is off: the
        diagnostics, which change no result) reporting it."""
        started = time.time()
        artifact = self.store.get_or_build(key, build)
        seconds = time.time() - started if not artifact.cached else artifact.manifest.get("seconds", 0.0)
        if report:
            self.reporter.stage(label, key.stage, artifact.cached, time.time() - started)
        self.stage_log.append({"cell": label, "stage": key.stage, "key": key.key, "cached": artifact.cached, "seconds": seconds})
        return artifact

    def _max_new_tokens(self, source: SourceSpec) -> int:
        """The sampling budget of a training source's completions (the run's override, else the source's)."""
        return self.config.decoding.max_new_tokens or source.max_new_tokens

    @cached_property
    def _engine_id(self) -> dict[str, Any]:
        """What identifies the inference engine in sample and score keys: outputs differ by engine,
        its version and dtype (``plan.engine_settings``)."""
        return {"engine": self.plan.engine_settings}

    def _base_inputs(self, cell: Cell) -> dict[str, str]:
        """What prepare and sample depend on besides their own config: the model (and its dtype) and the source's items."""
        return {"model": self.model_key, "dtype": self.plan.engine_settings.get("dtype"),
                "source": self.inputs.source_key(cell.source)}

    def _context(self, cell: Cell, prepared: Path | None) -> MethodContext:
        return MethodContext(
            load_model=lambda: self.loaded, source=self.plan.sources[cell.source], data=self.inputs.source_data(cell.source),
            config=self.config, seed=cell.seed, prepared=prepared, progress=self.reporter.progress,
        )

    def _eval_batch_size(self, task: TaskSpec) -> Any:
        """eval_batch_size, or for lm-eval's own tasks lm_eval.batch_size (auto: lm-eval's search, hf only)."""
        wanted = self.config.lm_eval.batch_size
        if task.kind != "lm_eval" or wanted is None or (wanted == "auto" and self.plan.backend != "hf"):
            return self.config.eval_batch_size
        return wanted

    def score_settings(self, task: TaskSpec, temperature: float = 0.0) -> ScoreSettings:
        from spd_bench.scoring import ScoreSettings

        return ScoreSettings(
            temperature=temperature,
            batch_size=self._eval_batch_size(task),
            max_new_tokens=task.max_new_tokens,
            allow_code_execution=self.config.allow_code_execution,
            work_dir=Path(self.config.cache_dir) / "scratch",
            timeout_s=self.config.score.timeout_s,
            memory_mb=self.config.score.memory_mb,
            n_samples=self.config.score.n_samples,
        )
