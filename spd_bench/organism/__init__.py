"""The built-in model organism: a synthetic task suite and a ~1M-parameter Llama trained on it.

``suite`` generates the problems, ``loaders`` serves them to ``tasks/synth.yaml``, and
``build.organism_dir(cache_dir)`` returns the trained model's folder, building it on first use
(docs/organism.md). Importing this package loads no torch.
"""
