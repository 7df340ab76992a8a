"""``base``: the model as it is; nothing is trained. Its scores are computed once and shared."""

from spd_bench.method import Method


class Base(Method):
    name = "base"
    description = "The untouched model (reference row; nothing trained)."
    trains = False
