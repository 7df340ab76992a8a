"""spd-bench: a benchmark harness for self-distillation of language models.

Importing the package is cheap (no torch); heavy modules load on first use.
"""

__version__ = "0.1.0"
