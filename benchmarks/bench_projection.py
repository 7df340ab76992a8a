"""Speed and memory of SPD's projection and extraction (run by hand; not part of the tests).

    PYTHONPATH=. python benchmarks/bench_projection.py [--device cuda] [--repeats 5]

1. Generation throughput of one few-million-parameter Llama (from config, fixed seed):
   unprojected vs folded weights vs forward hooks, interleaved in one run on the same prompts
   (batch 8, greedy, fixed length). Targets: folded >= 0.98x, hooks >= 0.90x.
2. Extraction (last_mid and all layers) vs a plain training forward+backward over the same
   tokens. Target: <= 2x.
3. Peak memory that extraction adds, with the calibration set doubled, each size in a fresh
   subprocess (CPU: peak RSS reset through /proc/self/clear_refs just before extracting, so
   Linux only; CUDA: max_memory_allocated above what the model takes). Target: flat.

Timings are medians and bests over interleaved repeats; on a shared machine trust the best.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from spd_bench.spd.extract import extract_projectors, random_projectors  # noqa: E402
from spd_bench.spd.kv_layout import resolve_layers  # noqa: E402
from spd_bench.spd.projection import folded_copy, projected  # noqa: E402
from spd_bench.spans import EncodedExample  # noqa: E402
from spd_bench.tiny import decoder_config  # noqa: E402

VOCAB = 4096
CAL_LENGTH, CAL_PROMPT = 128, 96


def build_model(device: str) -> LlamaForCausalLM:
    config = decoder_config("llama", VOCAB, layers=4, hidden=256, heads=8, kv_heads=4, intermediate=688,
                            special_ids=(1, 2, 0), tie_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device).eval()


def calibration(n: int) -> list[EncodedExample]:
    """Random token sequences with a 3-token answer span, like a numeric final answer."""
    generator = torch.Generator().manual_seed(1)
    examples = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (CAL_LENGTH,), generator=generator).tolist()
        span = [CAL_PROMPT + 20 <= t < CAL_PROMPT + 23 for t in range(CAL_LENGTH)]
        examples.append(EncodedExample(input_ids=ids, prompt_len=CAL_PROMPT, span_mask=span))
    return examples


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generation_rates(device: str, batch: int, prompt_len: int, new_tokens: int, repeats: int) -> dict[str, list[float]]:
    """Tokens/s per variant; each repeat runs all three in a rotated order to spread drift."""
    model = build_model(device)
    layers = resolve_layers("last_mid", model.config.num_hidden_layers)
    proj = random_projectors(model, layers, seed=0)  # the values of P do not change the cost
    folded = folded_copy(model, proj)
    prompts = torch.randint(3, VOCAB, (batch, prompt_len), generator=torch.Generator().manual_seed(2)).to(device)

    def run(variant: str) -> float:
        runner = folded if variant == "folded" else model
        sync(device)
        start = time.perf_counter()
        hooks = projected(model, proj) if variant == "hooks" else nullcontext()
        with torch.no_grad(), hooks:
            out = runner.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
            )
        sync(device)
        assert out.shape == (batch, prompt_len + new_tokens)
        return batch * new_tokens / (time.perf_counter() - start)

    variants = ["plain", "folded", "hooks"]
    for variant in variants:  # warm-up
        run(variant)
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    for repeat in range(repeats):
        order = variants[repeat % 3 :] + variants[: repeat % 3]
        for variant in order:
            rates[variant].append(run(variant))
    return rates


def forward_backward_seconds(model: LlamaForCausalLM, examples: list[EncodedExample], device: str) -> float:
    """A plain training pass: parameters require grad, NLL over every token, backward."""
    for param in model.parameters():
        param.requires_grad_(True)
    sync(device)
    start = time.perf_counter()
    for example in examples:
        ids = torch.tensor([example.input_ids], device=device)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def extraction_seconds(model: LlamaForCausalLM, examples: list[EncodedExample], layers: str, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    extract_projectors(model, examples, layers=resolve_layers(layers, model.config.num_hidden_layers))
    sync(device)
    return time.perf_counter() - start


def extraction_costs(device: str, n: int, repeats: int) -> dict[str, float]:
    """Median seconds of each pass, interleaved like the generation runs."""
    model = build_model(device)
    examples = calibration(n)
    passes = {
        "forward+backward": lambda: forward_backward_seconds(model, examples, device),
        "extract last_mid": lambda: extraction_seconds(model, examples, "last_mid", device),
        "extract all": lambda: extraction_seconds(model, examples, "all", device),
    }
    for measure in passes.values():  # warm-up
        measure()
    times: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, measure in passes.items():
            times[name].append(measure())
    return {name: statistics.median(values) for name, values in times.items()}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # the kernel reports KiB


def memory_child(n: int, device: str) -> None:
    """Runs in a fresh process: prints the MiB that extraction adds on top of model and data."""
    model = build_model(device)
    examples = calibration(n)
    layers = resolve_layers("all", model.config.num_hidden_layers)
    if device.startswith("cuda"):
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        extract_projectors(model, examples, layers=layers)
        print((torch.cuda.max_memory_allocated() - before) / 2**20)
        return
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak resident set size (VmHWM) to the current one
    extract_projectors(model, examples, layers=layers)
    print(_status_mib("VmHWM") - before)


def extraction_memory(n: int, device: str) -> float:
    command = [sys.executable, __file__, "--memory-child", str(n), "--device", device]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--calibration", type=int, default=16, help="calibration examples (doubled for memory)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.device)
        return

    model = build_model(args.device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"device {args.device}{gpu}"
    )
    print(
        f"model: Llama from config, {params:.1f}M parameters, fp32, 4 layers, K/V width 128, "
        f"projection rank 64 at layers {resolve_layers('last_mid', 4)}"
    )

    rates = generation_rates(args.device, args.batch, args.prompt_len, args.new_tokens, args.repeats)
    base_median, base_best = statistics.median(rates["plain"]), max(rates["plain"])
    print(
        f"\ngeneration: batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy, "
        f"{args.repeats} repeats"
    )
    print(f"{'variant':<10}{'median tok/s':>14}{'ratio':>8}{'best tok/s':>12}{'ratio':>8}")
    for variant, values in rates.items():
        median, best = statistics.median(values), max(values)
        print(f"{variant:<10}{median:>14.0f}{median / base_median:>8.3f}{best:>12.0f}{best / base_best:>8.3f}")

    costs = extraction_costs(args.device, args.calibration, args.repeats)
    plain = costs["forward+backward"]
    print(f"\nextraction: {args.calibration} examples x {CAL_LENGTH} tokens, {args.repeats} repeats (median)")
    print(f"{'pass':<20}{'seconds':>10}{'ratio':>8}")
    for name, seconds in costs.items():
        print(f"{name:<20}{seconds:>10.3f}{seconds / plain:>8.2f}")

    unit = "MiB allocated" if args.device.startswith("cuda") else "MiB peak RSS"
    print(f"\npeak memory added by extraction (all layers; fresh process per row; {unit})")
    for n in (args.calibration, 2 * args.calibration):
        print(f"{n:>4} examples {extraction_memory(n, args.device):>8.1f}")


if __name__ == "__main__":
    main()
