"""``raw_sd``: raw self-distillation. One sample per training prompt, no filtering, LoRA SFT.

It is SPD without the projection: same decoding, same corpus size, same fine-tuning, so the
difference between the two isolates the effect of steering generation.
"""

from spd_bench.method import Method


class RawSD(Method):
    name = "raw_sd"
    description = "Raw self-distillation: one unfiltered sample per prompt, LoRA SFT on prompt + completion."
