"""Built-in methods, registered lazily so listing them imports nothing heavy.

Baselines (ssd, rft, ...) live in the separate ``spd_baselines`` package and arrive through
the ``spd_bench.methods`` entry-point group, exactly like a third-party plugin.
"""

from __future__ import annotations

from typing import Any

from spd_bench.config import build_dataclass
from spd_bench.errors import UserError
from spd_bench.registry import METHODS

METHODS.register("base", "spd_bench.methods.base:Base")
METHODS.register("raw_sd", "spd_bench.methods.raw_sd:RawSD")
METHODS.register("spd", "spd_bench.methods.spd:SPD")
METHODS.register("spd_random", "spd_bench.methods.spd:SPDRandom")


def make_method(name: str, options: dict[str, Any] | None = None) -> Any:
    """Instantiate a registered method with validated options.

    Types are checked against the Options dataclass; ranges by its ``check(where)`` method, when
    it has one, so that every option fails at plan time with the field's full name.
    """
    cls = METHODS.get(name)
    try:
        opts = build_dataclass(cls.Options, options or {}, prefix=f"method_options.{name}.")
    except UserError:
        raise
    except TypeError as exc:
        raise UserError(f"method_options.{name}: {exc}") from exc
    check = getattr(opts, "check", None)
    if callable(check):
        check(f"method_options.{name}")
    return cls(opts)
