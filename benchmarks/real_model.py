"""Speed and memory on real weights: SmolLM2-135M-Instruct (Q4_1 dequantized to float32) on CPU.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/real_model.py [--cache-dir .spd_cache] [--quick]

Measured side by side in one process on a quiet machine, and printed as one JSON object:
- generation throughput (generated tokens per second, greedy, chat prompts) of the hf and vllm
  backends at several batch sizes (vLLM's engine start reported apart, not counted);
- the folded SPD generator against the plain model (hf backend);
- SPD extraction (default layers, K and V) against one training forward+backward over the same tokens;
- peak resident memory of the process after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 17 + 25?",
             "Name three primary colors.", "Explain what a prime number is.", "Give a synonym for happy.",
             "What is H2O?", "Describe a cat in one sentence."]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(backend, handle, prompts, plan) -> float:
    started = time.perf_counter()
    outputs = backend.generate(handle, prompts, plan)
    seconds = time.perf_counter() - started
    tokens = sum(len(backend.tokenizer(group[0], add_special_tokens=False)["input_ids"]) for group in outputs)
    return round(tokens / seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=".spd_cache")
    parser.add_argument("--quick", action="store_true", help="smaller batches and outputs (a smoke run)")
    args = parser.parse_args()

    import torch

    from spd_bench.backends.hf import HFBackend
    from spd_bench.backends.protocol import BASE, GenerationPlan, ProjectedHandle
    from spd_bench.models import load_model
    from spd_bench.prompts import render_items
    from spd_bench.spans import encode_example
    from spd_bench.spd.extract import extract_projectors, save_projectors
    from spd_bench.spd.kv_layout import resolve_layers

    name, cache = "smollm2-135m-instruct-q4", Path(args.cache_dir)
    batches = [8, 32] if args.quick else [8, 32, 64]
    new_tokens = 16 if args.quick else 64
    loaded = load_model(name, cache, "cpu", "float32")
    items = [{"id": str(i), "prompt": QUESTIONS[i % len(QUESTIONS)] + f" (#{i})"} for i in range(max(batches))]
    prompts = [item["prompt"] for item in render_items(items, loaded.tokenizer, "chat")]
    report: dict = {"model": name, "threads": torch.get_num_threads(), "new_tokens": new_tokens, "hf": {}, "vllm": {}}

    hf = HFBackend.from_loaded(loaded)
    for batch in batches:
        plan = GenerationPlan(max_new_tokens=new_tokens, temperature=0.0, batch_size=batch)
        report["hf"][batch] = throughput(hf, BASE, prompts[:batch], plan)
    report["peak_rss_mb_hf"] = round(peak_rss_mb())

    # SPD: projectors from 16 calibration examples, then folded generation and the extraction's cost
    pairs = [(f"Q: What is {a} + {b}?\nA:", f" {a} + {b} = {a + b}. #### {a + b}") for a, b in zip(range(3, 19), range(7, 23))]
    examples = [encode_example(loaded.tokenizer, p, a, rule="numeric_answer") for p, a in pairs]
    layers = resolve_layers("last_mid", loaded.model.config.num_hidden_layers)
    started = time.perf_counter()
    projectors = extract_projectors(loaded.model, examples, layers=layers, rank_fraction=0.5)
    extraction = time.perf_counter() - started
    loaded.model.train()
    started = time.perf_counter()
    for example in examples:
        ids = torch.tensor([example.input_ids])
        loaded.model(input_ids=ids, labels=ids).loss.backward()
    forward_backward = time.perf_counter() - started
    loaded.model.zero_grad(set_to_none=True)
    loaded.model.eval()
    report["extraction_s"], report["forward_backward_s"] = round(extraction, 2), round(forward_backward, 2)
    report["extraction_over_forward_backward"] = round(extraction / forward_backward, 2)
    work = cache / "benchmarks"
    work.mkdir(parents=True, exist_ok=True)
    save_projectors(projectors, work / "projectors.safetensors")
    plan = GenerationPlan(max_new_tokens=new_tokens, temperature=0.0, batch_size=batches[-1])
    folded = ProjectedHandle(projectors=str(work / "projectors.safetensors"), mode="fold")
    plain_rate = throughput(hf, BASE, prompts, plan)
    folded_rate = throughput(hf, folded, prompts, plan)
    report["folded_over_plain_hf"] = round(folded_rate / plain_rate, 3)
    report["peak_rss_mb_spd"] = round(peak_rss_mb())
    del hf, loaded

    try:
        from spd_bench.backends.vllm import VLLMBackend
    except ImportError:
        report["vllm"] = "not installed"
    else:
        engine = VLLMBackend.load(name, cache, "cpu", "float32")
        started = time.perf_counter()
        engine.generate(BASE, prompts[:1], GenerationPlan(max_new_tokens=1, temperature=0.0))
        report["vllm_engine_start_s"] = round(time.perf_counter() - started, 1)
        for batch in batches:
            plan = GenerationPlan(max_new_tokens=new_tokens, temperature=0.0, batch_size=batch)
            report["vllm"][batch] = throughput(engine, BASE, prompts[:batch], plan)
        engine.close()
        report["vllm_over_hf"] = {b: round(report["vllm"][b] / report["hf"][b], 2) for b in batches}
    report["peak_rss_mb"] = round(peak_rss_mb())
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
