"""SPD's own algorithms: where K and V live in a model (kv_layout), the capability subspace from
gradients on correctness-defining tokens (extract), and generation with K/V projected onto it
(projection). The ``spd`` method (spd_bench.methods.spd) and the backends use them; the engine
does not."""
