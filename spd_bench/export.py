"""``spd-bench export``: one fine-tuned cell out of the cache, as a folder anyone can load.

A trained adapter lives in the artifact store under its train stage's key, and its
``adapter_config.json`` names the base model by an absolute cache path, so it cannot leave the
machine as it is. The export finds the cell through its result records (which hold the stage
keys and the base model's identity), verifies the cached stages against their manifests, and
writes a self-contained folder: the adapter with its base model named portably (hub id and
commit), or the merged weights, or SPD's folded generator; with the tokenizer, a model card
holding the cell's metrics and provenance, and the run config that reproduces it. The folder
is built under a temporary name and renamed into place, so a failed export leaves nothing.
``--push-to-hub`` uploads that folder with huggingface_hub (docs/export.md).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError
from spd_bench.results import ResultRecord, load_record, record_files

Progress = Callable[[str], None]

RUN_CONFIG_FILE = "spd_bench_run.yaml"
CARD_FILE = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
# What a tokenizer may be saved as (transformers' fast and slow tokenizers, tiktoken, chat templates).
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja", "chat_template.json",
)
# The hub files an adapter-only export needs from the base model (no weights are downloaded).
HUB_DESCRIPTION_PATTERNS = ["*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
# Config fields that say where a run's files went on its machine, not what it computed.
_MACHINE_FIELDS = ("output_dir", "cache_dir")


@dataclass(frozen=True)
class ExportRequest:
    """What the command line asked for (paths absolute)."""

    results: Path
    model: str
    method: str
    seed: int
    out: Path
    source: str | None = None
    cache_dir: Path | None = None  # None: the cache the records' run used
    merge: bool = False
    projected: bool = False
    push_to_hub: str | None = None
    private: bool = False

    @property
    def kind(self) -> str:
        """adapter (default), merged (--merge) or projected (--projected)."""
        return "merged" if self.merge else "projected" if self.projected else "adapter"


@dataclass(frozen=True)
class CellRecords:
    """The result records of one trained cell (model, method, training source, seed), one per task."""

    records: list[tuple[Path, ResultRecord]]

    @property
    def first(self) -> ResultRecord:
        return self.records[0][1]

    def shared(self, what: str, value: Callable[[ResultRecord], Any]) -> Any:
        """A value every record of the cell must agree on (stage keys, model identity); refuse when they do not."""
        values = {json.dumps(value(record), sort_keys=True): value(record) for _path, record in self.records}
        if len(values) > 1:
            paths = ", ".join(str(path) for path, _record in self.records)
            raise UserError(f"the records of this cell disagree on {what} (runs with different settings wrote them:"
                            f" {paths}); re-run the cell so that its records agree, or delete the stale ones")
        return next(iter(values.values()))

    def stage_key(self, stage: str) -> str | None:
        return self.shared(f"the {stage} stage", lambda record: record.provenance.get("stage_keys", {}).get(stage))

    @property
    def model_key(self) -> str:
        return self.shared("the base model", lambda record: record.provenance.get("model_key"))


@dataclass(frozen=True)
class BaseModel:
    """The base model of a run: how the run named it, where its files are here, and its identity."""

    spec: str  # as the run was given it: a hub id, a built-in name or a local folder
    kind: str  # hub | built-in | local
    folder: Path
    identity: str  # the run's model key: <hub id>@<commit>, <name>@<hash> or local:<name>@<hash>

    @property
    def name_or_path(self) -> str:
        """What ``base_model_name_or_path`` should say: the hub id, the built-in's name, or the local folder."""
        return str(self.folder) if self.kind == "local" else self.spec

    @property
    def revision(self) -> str | None:
        """The hub commit the adapter was trained on (only hub models have one)."""
        return self.identity.rpartition("@")[2] if self.kind == "hub" else None


@dataclass
class ExportResult:
    """What was written (and pushed), for callers other than the command line."""

    out: Path
    kind: str
    base: BaseModel
    notes: list[str] = field(default_factory=list)
    pushed: str | None = None  # the repo's URL after --push-to-hub


# ---- finding the cell ---------------------------------------------------------------------------
def _safe_model(model: str) -> str:
    """The folder name records use for a model (results.record_relpath)."""
    return model.replace("/", "__")


def _run_hint(model: str, method: str, seed: int, tasks: list[str] | None = None) -> str:
    """How to make the cell's records and stages: run it (with the tasks when the records name them)."""
    task_flag = f" --tasks {','.join(tasks)}" if tasks else " --tasks TASKS"
    return f"run it first: spd-bench run --model {model} --methods {method} --seeds {seed}{task_flag}"


def find_cell_records(results: Path, model: str, method: str, seed: int, source: str | None) -> CellRecords:
    """The records of (model, method, source, seed), each task's; the source may be left out when only one was trained."""
    if method == "base":
        raise UserError("method base trains nothing, so there is no fine-tuned model to export; the base model is"
                        f" {model} itself")
    records_dir = results / "records"
    if not records_dir.is_dir():
        raise UserError(f"no result records in {results} (no records/ folder); pass --results DIR, or "
                        + _run_hint(model, method, seed))
    model_dir = records_dir / _safe_model(model)
    if not model_dir.is_dir():
        found = sorted(p.name.replace("__", "/") for p in records_dir.iterdir() if p.is_dir())
        raise UserError(f"no records of model {model!r} in {records_dir} (models there: {', '.join(found) or 'none'});"
                        " pass --model as the run spelled it, or " + _run_hint(model, method, seed))
    stored = set(record_files(model_dir))  # not the lm-eval and EvalPlus files kept beside the records
    paths = sorted(path for path in model_dir.glob(f"*/{method}-*seed{seed}.json") if path in stored)
    records = [(path, record) for path in paths for record in [load_record(path)]
               if (record.model, record.method, record.seed) == (model, method, seed)]
    if not records:
        cells = sorted({p.stem for p in record_files(model_dir)})
        raise UserError(f"no record of {method} seed {seed} for model {model} in {results} (cells there:"
                        f" {', '.join(cells) or 'none'}); " + _run_hint(model, method, seed))
    sources = sorted({str(record.training_source) for _path, record in records})
    if source is None and len(sources) > 1:
        raise UserError(f"{method} seed {seed} on {model} was trained on several sources ({', '.join(sources)});"
                        " pass --source NAME")
    chosen = source if source is not None else sources[0]
    cell = [(path, record) for path, record in records if record.training_source == chosen]
    if not cell:
        raise UserError(f"no record of {method} seed {seed} on {model} trained on source {chosen!r} (sources"
                        f" recorded: {', '.join(sources)}); pass one of those to --source, or "
                        + _run_hint(model, method, seed))
    return CellRecords(cell)


def cache_folder(request: ExportRequest, cell: CellRecords) -> Path:
    """``--cache-dir``, else the cache the run wrote (recorded in its config)."""
    if request.cache_dir is not None:
        return request.cache_dir
    return Path(cell.first.config.get("cache_dir") or ".spd_cache").resolve()


# ---- the cached stages --------------------------------------------------------------------------
def verified_stage(cache: Path, stage: str, key: str | None, missing_hint: str) -> tuple[Path, dict[str, Any]]:
    """The stage's folder and the info its manifest recorded, after checking every file it lists.

    An export is published for others to use: a file changed since the stage wrote it must
    stop the export, as it stops a run from reusing the stage.
    """
    from spd_bench.store import MANIFEST, file_table

    if key is None:
        raise UserError(f"the records of this cell name no {stage} stage; {missing_hint}")
    folder = cache / stage / key
    where = f"the {stage} stage of this cell ({stage}/{key})"
    if not folder.is_dir():
        raise UserError(f"{where} is not in the cache {cache}; pass --cache-dir of the run that wrote the records,"
                        f" or {missing_hint}")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = manifest["files"]
        info = manifest["info"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where} in {cache} has no readable {MANIFEST} ({type(exc).__name__}); {missing_hint}") from exc
    actual = file_table(folder)
    for rel, entry in listed.items():
        if actual.get(rel) != entry:
            problem = "is missing" if rel not in actual else "changed since the stage wrote it"
            raise UserError(f"{where} in {cache}: {rel} {problem}; re-run the cell to rebuild it ({missing_hint})")
    return folder, info


def adapter_folder(cache: Path, cell: CellRecords, hint: str) -> Path:
    """The cell's trained LoRA adapter (a cell whose curated corpus was empty trained none)."""
    folder, info = verified_stage(cache, "train", cell.stage_key("train"), hint)
    if info.get("empty_corpus"):
        raise UserError(f"{cell.first.method} seed {cell.first.seed} trained nothing (its curated corpus was empty):"
                        " there is no adapter to export; its records score the base model")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise UserError(f"the train stage {folder} holds no {ADAPTER_CONFIG}; re-run the cell ({hint})")
    return folder


def projectors_file(cache: Path, cell: CellRecords, hint: str) -> tuple[Path, dict[str, Any]]:
    """SPD's projectors from the cell's prepare stage (only SPD methods have them)."""
    from spd_bench.methods.spd import PROJECTORS_FILE

    method = cell.first.method
    key = cell.stage_key("prepare")
    if key is None:
        raise UserError(f"--projected exports SPD's projected generator, and {method} has no prepare stage (no"
                        " projectors): use it with spd or spd_random, or drop --projected")
    folder, info = verified_stage(cache, "prepare", key, hint)
    if not (folder / PROJECTORS_FILE).is_file():
        raise UserError(f"--projected exports SPD's projected generator, and {method}'s prepare stage holds no"
                        f" {PROJECTORS_FILE}: use it with spd or spd_random, or drop --projected")
    return folder / PROJECTORS_FILE, info


# ---- the base model ---------------------------------------------------------------------------
def base_model(spec: str, identity: str, cache: Path, weights: bool) -> BaseModel:
    """The run's base model on this machine, checked to be the one the adapter was trained on.

    ``weights``: a merge or a fold needs the weights; an adapter export only the tokenizer.
    """
    from spd_bench.builtin_models import BUILTIN_MODELS

    if spec in BUILTIN_MODELS:
        return _checked_local(spec, "built-in", spec, identity, cache)
    if identity.startswith("local:"):
        folder = Path(spec).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise UserError(f"the run's base model folder {spec!r} is not found from {Path.cwd()}; run the export"
                            " from the folder the run was started in (the records name the model as the run did)")
        return _checked_local(spec, "local", str(folder), identity, cache)
    return _hub_base(spec, identity, weights)


def _checked_local(spec: str, kind: str, resolvable: str, identity: str, cache: Path) -> BaseModel:
    """A built-in or local base model, refused when its content hash differs from the run's."""
    from spd_bench.models import resolve_model_path

    folder, _source, now = resolve_model_path(resolvable, cache)
    if now != identity:
        raise UserError(f"the base model {spec} changed since the run (the records say {identity}, it is {now} now);"
                        " the adapter fits the model it was trained on: restore that model or re-run the cell")
    return BaseModel(spec=spec, kind=kind, folder=folder, identity=identity)


def _hub_base(repo_id: str, identity: str, weights: bool) -> BaseModel:
    """The hub model at the commit the run used, from the hub cache (or downloaded when online)."""
    from huggingface_hub import snapshot_download

    from spd_bench.models import SNAPSHOT_PATTERNS

    repo, _, commit = identity.rpartition("@")
    if repo != repo_id or not commit:
        raise UserError(f"the records name the base model {repo_id} with identity {identity!r}, not <hub id>@<commit>;"
                        " re-run the cell with this spd-bench")
    patterns = SNAPSHOT_PATTERNS if weights else HUB_DESCRIPTION_PATTERNS
    try:
        folder = Path(snapshot_download(repo_id, revision=commit, allow_patterns=patterns))
    except Exception as exc:  # the hub client raises many kinds; all mean "not here and not reachable"
        raise UserError(f"the base model {repo_id} at commit {commit} is neither in the hub cache nor reachable"
                        f" ({type(exc).__name__}); on a networked machine run `hf download {repo_id} --revision"
                        f" {commit}` (or copy that hub cache here)") from exc
    return BaseModel(spec=repo_id, kind="hub", folder=folder, identity=identity)


# ---- writing the folder -----------------------------------------------------------------------
def portable_adapter_config(config: dict[str, Any], base: BaseModel) -> dict[str, Any]:
    """The adapter's config with the base model named by hub id and commit instead of a cache path."""
    return {**config, "base_model_name_or_path": base.name_or_path, "revision": base.revision}


def write_adapter(out: Path, adapter: Path, base: BaseModel) -> None:
    """The adapter's weights as trained, and its config made portable."""
    for file in sorted(adapter.iterdir()):
        if file.is_file() and file.name.startswith("adapter_") and file.name != ADAPTER_CONFIG:
            shutil.copyfile(file, out / file.name)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    (out / ADAPTER_CONFIG).write_text(json.dumps(portable_adapter_config(config, base), indent=2, sort_keys=True) + "\n")


def copy_tokenizer(out: Path, base_folder: Path) -> list[str]:
    """The base model's tokenizer files, byte for byte (fine-tuning changed no token)."""
    names = [name for name in TOKENIZER_FILES if (base_folder / name).is_file()]
    names += sorted(p.name for p in base_folder.glob("*.tiktoken"))
    if not names:
        raise UserError(f"the base model folder {base_folder} holds no tokenizer files; it cannot be exported")
    for name in names:
        shutil.copyfile(base_folder / name, out / name)  # follows the hub cache's symlinks
    return names


def _load_base_weights(base: BaseModel) -> Any:
    """The base model's weights on the CPU in their stored dtype (a merge or fold changes no dtype)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base.folder, dtype="auto")
    model.eval()
    return model


def _save_checkpoint(model: Any, out: Path) -> None:
    """A plain transformers checkpoint: config, weights (safetensors) and generation config."""
    model.save_pretrained(out)


def write_merged(out: Path, adapter: Path, base: BaseModel) -> None:
    """Base + adapter merged into the weights (peft's merge_and_unload): a plain checkpoint."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(_load_base_weights(base), str(adapter)).merge_and_unload()
    _save_checkpoint(merged, out)


def write_projected(out: Path, projectors: Path, base: BaseModel) -> None:
    """SPD's generator: the base weights with the K/V projection folded into k_proj/v_proj."""
    from spd_bench.spd.extract import load_projectors
    from spd_bench.spd.projection import fold_projection

    _save_checkpoint(fold_projection(_load_base_weights(base), load_projectors(projectors)), out)


def reproduction_config(cell: CellRecords) -> dict[str, Any]:
    """The run's full config narrowed to this cell (its method, seed and tasks), minus where files went."""
    config = {key: value for key, value in cell.first.config.items() if key not in _MACHINE_FIELDS}
    tasks = sorted({record.task for _path, record in cell.records})
    return {**config, "methods": [cell.first.method], "seeds": [cell.first.seed], "tasks": tasks}


def write_run_config(out: Path, cell: CellRecords) -> None:
    """``spd_bench_run.yaml``: the exact settings travel with the model, not only their hash."""
    import yaml

    text = ("# The run config of this cell, from its result records: `spd-bench run --config "
            f"{RUN_CONFIG_FILE}` reproduces it\n" + yaml.safe_dump(reproduction_config(cell), sort_keys=True))
    (out / RUN_CONFIG_FILE).write_text(text)


# ---- the model card ---------------------------------------------------------------------------
def _version() -> str:
    """The exporting spd-bench's version (the run's own is in the record's provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spd-bench")
    except PackageNotFoundError:
        return "unknown"


def card_metadata(cell: CellRecords, base: BaseModel, kind: str) -> dict[str, Any]:
    """The card's YAML header: the hub reads library_name, base_model (hub ids only) and tags from it."""
    meta: dict[str, Any] = {"library_name": "peft" if kind == "adapter" else "transformers",
                            "tags": ["spd-bench", "self-distillation", cell.first.method]}
    if kind == "adapter":
        meta["tags"].append("lora")
    if base.kind == "hub":
        meta["base_model"] = base.spec
    return meta


def _base_section(base: BaseModel, kind: str) -> list[str]:
    where = {
        "hub": f"`{base.spec}` from the Hugging Face hub, at commit `{base.revision}`",
        "built-in": (f"spd-bench's built-in model `{base.spec}` (identity `{base.identity}`), which is not on the hub:"
                     f" spd-bench builds it (`spd_bench.models.resolve_model_path(\"{base.spec}\", CACHE_DIR)` returns"
                     " its folder)"),
        "local": (f"the local folder `{base.folder}` on the machine that trained it (identity `{base.identity}`); it"
                  " is not on the hub: use your copy of that folder"),
    }[base.kind]
    lines = ["## Base model", "", f"The base model is {where}."]
    if kind == "adapter":
        said = (f"names it by its hub id with `revision` = `{base.revision}`" if base.kind == "hub" else
                f"names it `{base.name_or_path}`, which only spd-bench resolves" if base.kind == "built-in" else
                f"keeps its path `{base.name_or_path}`")
        lines += ["", f"`{ADAPTER_CONFIG}` {said}" + ("." if base.kind == "hub" else
                  "; pass the base model's folder explicitly when loading, as below.")]
    return lines


def _load_section(base: BaseModel, kind: str) -> list[str]:
    base_ref = base.spec if base.kind == "hub" else "BASE_MODEL_FOLDER"
    revision = f", revision=\"{base.revision}\"" if base.kind == "hub" else ""
    if kind != "adapter":
        return ["## Loading", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "model = AutoModelForCausalLM.from_pretrained(\"THIS_FOLDER_OR_REPO\")",
                "tokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER_OR_REPO\")", "```", "",
                "`lm_eval --model hf --model_args pretrained=THIS_FOLDER_OR_REPO --tasks ...` scores it."]
    return ["## Loading", "", "```python", "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f"base = AutoModelForCausalLM.from_pretrained(\"{base_ref}\"{revision})",
            "model = PeftModel.from_pretrained(base, \"THIS_FOLDER_OR_REPO\")",
            "tokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER_OR_REPO\")", "```", "",
            f"`lm_eval --model hf --model_args pretrained={base_ref},peft=THIS_FOLDER_OR_REPO --tasks ...` scores"
            " it with lm-eval" + (" (lm-eval's `revision` would apply to the adapter as well, so the base model is"
                                  " taken at its default branch there)." if base.kind == "hub" else ".")]


def _what_section(cell: CellRecords, kind: str, projector_info: dict[str, Any] | None) -> list[str]:
    record = cell.first
    what = {
        "adapter": "the LoRA adapter (peft) that this cell fine-tuned",
        "merged": "the base model with this cell's LoRA adapter merged into its weights (peft `merge_and_unload`)",
        "projected": ("SPD's generator for this cell: the base model with keys and values projected onto the"
                      " capability subspace, the projection folded into the `k_proj`/`v_proj` weights. It is the"
                      " model that sampled this cell's training data, not the fine-tuned model"),
    }[kind]
    lines = [f"# {record.method} on {record.model} (seed {record.seed}, trained on {record.training_source})", "",
             f"This folder holds {what}. It was exported by `spd-bench export` (spd-bench {_version()}) from the"
             " cell's result records and the artifact cache.", ""]
    if projector_info:
        meta = projector_info.get("projectors", {})
        ranks = meta.get("ranks", {})
        dims = meta.get("dims", {})
        parts = [f"layer {layer} {kind_}: rank {rank}/{dims.get(layer, {}).get(kind_, '?')}"
                 for layer, by_kind in sorted(ranks.items()) for kind_, rank in sorted(by_kind.items())]
        lines += [f"Projectors ({meta.get('source', 'spd')}): " + "; ".join(parts) + ".", ""]
    return lines


def _method_section(record: ResultRecord) -> list[str]:
    info = record.method_info
    lines = ["## Method", "", f"`{record.method}` (version {info.get('version')}): {info.get('description', '')}"
             f" External signal: {info.get('external_signal') or 'none'}.", ""]
    options = info.get("options") or {}
    if options:
        lines += ["| option | value |", "|---|---|", *(f"| {key} | `{value!r}` |" for key, value in sorted(options.items())), ""]
    return lines


def _training_section(record: ResultRecord) -> list[str]:
    budget = record.method_info.get("budget") or {}
    training = record.method_info.get("training") or {}
    train = record.config.get("train") or {}
    lines = ["## Training", "", f"- training source: `{record.training_source}`, seed {record.seed}"]
    lines += ["- data and budget: " + ", ".join(f"{key} {value}" for key, value in sorted(budget.items()))]
    if record.config.get("n_train") is not None:
        lines.append(f"- n_train: first {record.config['n_train']} training prompts")
    lora = {key: train.get(key) for key in ("lora_r", "lora_alpha", "lora_dropout", "target_modules")}
    optim = {key: train.get(key) for key in ("lr", "schedule", "warmup_ratio", "weight_decay", "epochs", "batch_size",
                                             "max_length", "precision")}
    lines.append("- LoRA: " + ", ".join(f"{key} {value}" for key, value in lora.items()))
    lines.append("- optimisation: " + ", ".join(f"{key} {value}" for key, value in optim.items()))
    if "loss_first" in training:
        lines.append(f"- training loss: {training['loss_first']:.4f} (first step) -> {training.get('loss_last', float('nan')):.4f} (last)")
    return [*lines, ""]


def _results_section(cell: CellRecords, kind: str) -> list[str]:
    scored = (" They score the model fine-tuned on this generator's samples, not this checkpoint."
              if kind == "projected" else "")
    lines = ["## Results", "", f"Every result record of this cell (the primary metric of each task in bold).{scored}", "",
             "| task | domain | metric | value | items | scorer | backend |", "|---|---|---|---|---|---|---|"]
    for _path, record in sorted(cell.records, key=lambda entry: entry[1].task):
        settings = record.eval_settings
        items = f"{settings.n_items}" + (f" (limit {settings.limit})" if settings.limit else "")
        for metric, value in sorted(record.metrics.items()):
            shown = f"**{value:.4f}**" if metric == record.primary_metric else f"{value:.4f}"
            lines.append(f"| {record.task} | {record.domain} | {metric} | {shown} | {items} | {settings.scorer} |"
                         f" {settings.backend} |")
    return [*lines, ""]


def _provenance_section(cell: CellRecords, base: BaseModel) -> list[str]:
    record = cell.first
    prov = record.provenance
    versions = prov.get("versions") or {}
    keys = prov.get("stage_keys") or {}
    return ["## Provenance", "",
            f"- spd-bench {versions.get('spd-bench', 'unknown')}, git commit `{prov.get('git_commit') or 'unknown'}`",
            "- software: " + ", ".join(f"{name} {value}" for name, value in sorted(versions.items()) if name != "spd-bench"),
            f"- base model identity: `{base.identity}`; device {prov.get('device')}, dtype {prov.get('dtype')}",
            f"- config hash `{record.config_hash}`; stage keys: "
            + ", ".join(f"{stage} `{key}`" for stage, key in keys.items() if key and stage != "score"), ""]


def _reproduce_section(cell: CellRecords) -> list[str]:
    command = cell.first.provenance.get("command")
    recorded = (f"The command that ran it: `{command}`" if command else
                "The command that ran it was not recorded (the run did not come from the console script); a task or"
                " method from a plugin needs the same `--plugin`.")
    return ["## Reproducing", "", recorded, "",
            f"`spd-bench run --config {RUN_CONFIG_FILE}` runs this cell again with the run's full config (in"
            f" `{RUN_CONFIG_FILE}` beside this card: this method, seed and tasks); with the same software it"
            " computes the same stages.", ""]


def model_card(cell: CellRecords, base: BaseModel, kind: str, projector_info: dict[str, Any] | None = None) -> str:
    """README.md: what the folder holds, how to load it, and the cell's metrics, options and provenance."""
    import yaml

    record = cell.first
    body = [*_what_section(cell, kind, projector_info), *_base_section(base, kind), "", *_load_section(base, kind), "",
            *_method_section(record), *_training_section(record), *_results_section(cell, kind),
            *_provenance_section(cell, base), *_reproduce_section(cell)]
    return "---\n" + yaml.safe_dump(card_metadata(cell, base, kind), sort_keys=True) + "---\n\n" + "\n".join(body)


# ---- publishing and pushing -------------------------------------------------------------------
def check_out_folder(out: Path) -> None:
    """``--out`` must be new (or an empty folder) in a writable place: an export never overwrites."""
    from spd_bench.store import ensure_writable

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty folder; pass a new folder or delete it")
    ensure_writable(out.parent, "output folder", "--out")


def publish(out: Path, build: Callable[[Path], None]) -> None:
    """Build the folder under a temporary name beside ``out`` and rename it into place (nothing half-written)."""
    from spd_bench.store import publish_folder

    publish_folder(out, build)  # an empty --out folder is replaced by the rename (checked empty before)


def check_can_push() -> None:
    """Refuse before any work when the hub cannot take the upload (offline mode or no connection)."""
    from spd_bench.hub import hub_reachable

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise UserError("cannot push: HF_HUB_OFFLINE is set; unset it on a machine with network, or drop"
                        " --push-to-hub and upload the folder later (`hf upload REPO DIR`)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not hub_reachable():
        raise UserError(f"cannot push: the hub at {endpoint} cannot be reached; drop --push-to-hub and upload the"
                        " folder later (`hf upload REPO DIR`), or check the network and HF_ENDPOINT")


def push_folder(folder: Path, repo_id: str, private: bool, message: str) -> str:
    """Create the model repo (kept when it exists) and upload the folder in one commit; returns the repo URL.

    Without ``private`` the hub's default applies (public, unless the organisation makes repos private).
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=message)
    except Exception as exc:  # the hub client raises many kinds (auth, network, name); each is one line here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot push {folder} to {repo_id}: {first} ({type(exc).__name__}); the folder is complete:"
                        f" log in (`hf auth login` or HF_TOKEN) and run `hf upload {repo_id} {folder}`") from exc
    return str(url)


# ---- the command ------------------------------------------------------------------------------
def check_request(request: ExportRequest) -> None:
    """Flags that contradict each other, refused before anything is read."""
    if request.merge and request.projected:
        raise UserError("--merge exports the fine-tuned model and --projected SPD's generator (the base model with"
                        " the projection); pick one")
    if request.private and not request.push_to_hub:
        raise UserError("--private is an option of --push-to-hub REPO; add --push-to-hub or drop --private")


def export_cell(request: ExportRequest, progress: Progress = lambda _message: None) -> ExportResult:
    """Find the cell, check every input, then write the folder atomically (and push it when asked)."""
    check_request(request)
    check_out_folder(request.out)
    if request.push_to_hub:
        check_can_push()
    cell = find_cell_records(request.results, request.model, request.method, request.seed, request.source)
    record = cell.first
    cache = cache_folder(request, cell)
    hint = _run_hint(request.model, request.method, request.seed, sorted({r.task for _p, r in cell.records}))
    projector_info = None
    if request.projected:
        projectors, projector_info = projectors_file(cache, cell, hint)
    else:
        adapter = adapter_folder(cache, cell, hint)
    base = base_model(record.model, cell.model_key, cache, weights=request.kind != "adapter")
    progress(f"{record.method} seed {record.seed} ({record.training_source}) on {record.model}: {len(cell.records)}"
             f" records; exporting the {request.kind} model")

    def build(tmp: Path) -> None:
        if request.kind == "adapter":
            write_adapter(tmp, adapter, base)
        elif request.kind == "merged":
            write_merged(tmp, adapter, base)
        else:
            write_projected(tmp, projectors, base)
        copy_tokenizer(tmp, base.folder)
        write_run_config(tmp, cell)
        (tmp / CARD_FILE).write_text(model_card(cell, base, request.kind, projector_info))

    publish(request.out, build)
    result = ExportResult(out=request.out, kind=request.kind, base=base)
    if base.kind != "hub" and request.kind == "adapter":
        result.notes.append(f"the base model is {'the built-in' if base.kind == 'built-in' else 'a local folder'}"
                            f" {base.spec}, not a hub model: {ADAPTER_CONFIG} names it {base.name_or_path!r}"
                            f" (the card says how to load it)")
    for note in result.notes:
        progress(f"note: {note}")
    progress(f"exported the {request.kind} model to {request.out}")
    if request.push_to_hub:
        progress(f"pushing it to {request.push_to_hub}")
        result.pushed = push_folder(request.out, request.push_to_hub, request.private,
                                    f"spd-bench export: {record.method} seed {record.seed} ({record.training_source})"
                                    f" on {record.model}, {request.kind}")
        progress(f"pushed to {result.pushed}")
    return result
