"""Built-in methods: base, raw_sd, spd and spd_random (registered in spd_bench.registry).

Baselines (ssd, rft, ...) live in the separate ``spd_baselines`` package and arrive through
the ``spd_bench.methods`` entry-point group, exactly like a third-party plugin. Every method
implements the protocol in ``spd_bench.method`` (importable as ``spd_bench.api``).
"""
