"""HF vs vLLM on one machine: greedy agreement and sampling throughput for base, folded-SPD and adapter models.

Offline: it builds a model of Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads, 2 KV heads,
vocab 151,936, biased k/v) with random weights and a word-level tokenizer over the whole vocab
(every id decodes), plus random SPD projectors and a random LoRA adapter; the organism is checked
too. Each model is served by spd-bench's hf and vllm backends on the same prompts; the script
prints greedy agreement (token for token) and throughput (generated tokens per second, engine
start excluded and printed apart), and writes the figures as JSON.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_check.py --device cuda --dtype bfloat16 \\
        --out gpu_check.json        # a GPU: the target is vLLM >= 5x HF sampling throughput at 0.5B, bf16
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_check.py --device cpu --dtype float32 \\
        --shape tiny --prompts 8 --new-tokens 16   # a CPU smoke run of the same code path

Random weights decode nonsense, so greedy agreement here measures numerics (bf16 kernels differ
between engines; float32 on CPU should agree almost everywhere), not quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QWEN25_05B = dict(layers=24, hidden=896, heads=14, kv_heads=2, intermediate=4864, vocab=151_936, max_positions=32_768)
TINY = dict(layers=2, hidden=128, heads=4, kv_heads=2, intermediate=256, vocab=2_000, max_positions=512)


def build_random_qwen(folder: Path, shape: dict[str, int], dtype: str, seed: int = 0) -> None:
    """A Qwen2 model of ``shape`` with random weights and a word-level tokenizer covering its vocab."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from spd_bench.tiny import decoder_config

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, shape["vocab"])}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    config = decoder_config("qwen2", shape["vocab"], layers=shape["layers"], hidden=shape["hidden"],
                            heads=shape["heads"], kv_heads=shape["kv_heads"], intermediate=shape["intermediate"],
                            max_positions=shape["max_positions"], special_ids=(1, 2, 0))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)


def make_extras(model_folder: Path, work: Path, device: str, dtype: str) -> tuple[Path, Path]:
    """Random SPD projectors (layers {L//2, L-1}, K and V, rank d/4) and a random rank-8 LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from spd_bench.models import load_model
    from spd_bench.spd.extract import random_projectors, save_projectors

    work.mkdir(parents=True, exist_ok=True)
    loaded = load_model(str(model_folder), work, device, dtype)
    n_layers = loaded.model.config.num_hidden_layers
    projectors = work / "projectors.safetensors"
    save_projectors(random_projectors(loaded.model, sorted({n_layers // 2, n_layers - 1}), rank=None, project="both",
                                      seed=3, rank_fraction=0.25), projectors)
    torch.manual_seed(5)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    adapter = work / "adapter"
    peft_model = get_peft_model(loaded.model, config)
    for name, parameter in peft_model.named_parameters():  # small B: the adapter changes outputs, not into noise
        if "lora_B" in name:
            parameter.data.mul_(0.05)
    peft_model.save_pretrained(adapter)
    return projectors, adapter


def prompts_for(tokenizer: Any, n: int, length: int, seed: int) -> list[str]:
    """``n`` prompts of ``length`` words; random words for the random model, task prompts for the organism."""
    import random

    if "w3" in tokenizer.get_vocab():  # the word-level tokenizer of the random model
        rng = random.Random(seed)
        return [" ".join(f"w{rng.randrange(3, len(tokenizer))}" for _ in range(length)) for _ in range(n)]
    from spd_bench.organism import suite

    items = [item for family in ("math", "code") for item in suite.items(family, "eval", n, seed=0)]
    return [item["prompt"] for item in items[:n]]


def timed_generate(backend: Any, handle: Any, prompts: list[str], new_tokens: int, batch_size: int) -> dict[str, Any]:
    from spd_bench.backends import GenerationPlan

    plan = GenerationPlan(max_new_tokens=new_tokens, batch_size=batch_size)
    backend.generate(handle, prompts[: min(4, len(prompts))], plan)  # warm-up (kernels, the adapter's load)
    started = time.perf_counter()
    texts = [row[0] for row in backend.generate(handle, prompts, plan)]
    seconds = time.perf_counter() - started
    tokens = [backend.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return {"texts": texts, "tokens": tokens, "seconds": seconds, "tok_per_s": sum(map(len, tokens)) / seconds}


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(1, len(a))


def check_model(name: str, folder: Path, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from spd_bench.backends import BASE, AdapterHandle, ProjectedHandle, load_backend

    projectors, adapter = make_extras(folder, work, args.device, args.dtype)
    handles = {"base": BASE, "folded SPD": ProjectedHandle(projectors, "fold"), "adapter": AdapterHandle(adapter)}
    results: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in handles}
    starts: dict[str, float] = {}
    for backend_name in ("hf", "vllm"):
        options = {"gpu_memory_utilization": args.gpu_memory_utilization} if backend_name == "vllm" else None
        started = time.perf_counter()
        backend = load_backend(str(folder), work, args.device, args.dtype, name=backend_name, options=options)
        prompts = prompts_for(backend.tokenizer, args.prompts, args.prompt_words, seed=0)
        for label, handle in handles.items():
            began = time.perf_counter()
            results[label][backend_name] = timed_generate(backend, handle, prompts, args.new_tokens, args.batch_size)
            results[label][backend_name]["wall_s"] = time.perf_counter() - began
        starts[backend_name] = time.perf_counter() - started
        backend.close()
    rows = []
    for label, by_backend in results.items():
        hf, vllm = by_backend["hf"], by_backend["vllm"]
        rows.append({
            "model": name, "variant": label, "prompts": args.prompts, "new_tokens": args.new_tokens,
            "hf_tok_per_s": round(hf["tok_per_s"], 1), "vllm_tok_per_s": round(vllm["tok_per_s"], 1),
            "vllm_over_hf": round(vllm["tok_per_s"] / hf["tok_per_s"], 2),
            "greedy_agreement": round(agreement(hf["tokens"], vllm["tokens"]), 3),
        })
    rows[0]["backend_total_s"] = {key: round(value, 1) for key, value in starts.items()}
    return rows


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "device": args.device, "dtype": args.dtype,
                            "cpu_count": os.cpu_count()}
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except ImportError:
        info["vllm"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--shape", choices=("qwen2.5-0.5b", "tiny"), default="qwen2.5-0.5b")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--prompt-words", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="the hf backend's generation batch")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--no-organism", action="store_true")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "random-qwen"
        build_random_qwen(folder, QWEN25_05B if args.shape == "qwen2.5-0.5b" else TINY, args.dtype)
        rows = check_model(f"random Qwen2 ({args.shape})", folder, work / "random", args)
        if not args.no_organism:
            from spd_bench.organism.build import organism_dir

            organism_args = argparse.Namespace(**{**vars(args), "dtype": "float32"})
            rows += check_model("organism", organism_dir(work / "cache"), work / "organism", organism_args)
    report = {"environment": environment(args), "command": " ".join(sys.argv), "rows": rows}
    print("| model | variant | hf tok/s | vllm tok/s | vllm / hf | greedy agreement |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['variant']} | {row['hf_tok_per_s']} | {row['vllm_tok_per_s']} |"
              f" {row['vllm_over_hf']} | {row['greedy_agreement']:.1%} |")
    print(json.dumps(report["environment"]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
