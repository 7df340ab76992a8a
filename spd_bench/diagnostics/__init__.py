"""Reporting-only evidence on a trained cell: what its training corpus looks like (corpus.py) and
what its K/V projection does to the model on the training prompts (subspace.py).

Both are cached as stages of their own beside the pipeline's stages (their keys include the
sample or prepare stage's key, never the other way round), so adding or changing a diagnostic
never invalidates a cached sample, adapter or score. No method ever reads them; labels used here
are for reporting only (docs/diagnostics.md).
"""

from __future__ import annotations

DIAGNOSTICS_FILE = "diagnostics.json"  # what each diagnostic stage writes
CORPUS_VERSION = 1  # bump when a corpus number's definition changes
SUBSPACE_VERSION = 1  # bump when a subspace number's definition changes
