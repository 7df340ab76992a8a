"""One generic registry for tasks and methods.

Entries are objects, or lazy ``"module:attr"`` strings resolved on first use, so listing what
exists never imports torch. Third-party packages add entries through entry-point groups
(``spd_bench.methods``, ``spd_bench.tasks``) with no registration call; ``--plugin`` loads a
file or module that registers with the decorator.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from spd_bench.errors import UserError, did_you_mean

T = TypeVar("T")


def resolve_ref(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise UserError(f"bad reference {ref!r}: write it as 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r} for {ref!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UserError(f"{module_name!r} has no attribute {attr!r} (from {ref!r})") from exc


class Registry(Generic[T]):
    """Name -> entry, with lazy references, entry points and did-you-mean errors."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T | str] = {}
        self._sources: dict[str, str] = {}
        self._entry_points_loaded = False

    def register(self, name: str, entry: T | str, source: str = "built-in", replace: bool = False) -> None:
        """Add ``entry`` (an object or a lazy ``"module:attr"`` string) under ``name``."""
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise UserError(f"{self.kind} {name!r} is registered twice (second from {source}); rename one")
        self._entries[name] = entry
        self._sources[name] = source

    def decorator(self, name: str, source: str = "plugin") -> Callable[[T], T]:
        """``@METHODS.decorator("my_method")`` registers the decorated object."""

        def wrap(obj: T) -> T:
            self.register(name, obj, source=source, replace=True)
            return obj

        return wrap

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue
            dist = ep.dist.name if ep.dist is not None else "entry point"
            source = "baselines" if dist == "spd-bench" else f"plugin ({dist})"
            self._entries[ep.name] = ep.value
            self._sources[ep.name] = source

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def source(self, name: str) -> str:
        self._load_entry_points()
        return self._sources[name]

    def check(self, name: str) -> None:
        """Fail with close matches and the full list when ``name`` is unknown (no imports)."""
        self._load_entry_points()
        if name in self._entries:
            return
        raise UserError(
            f"unknown {self.kind} {name!r}: {did_you_mean(name, self._entries)}known {self.kind}s: {', '.join(self.names())}"
            f" (see `spd-bench list {self.kind}s`)"
        )

    def get(self, name: str) -> T:
        self.check(name)
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = resolve_ref(entry)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def load_plugin(spec: str) -> None:
    """Import a plugin given as a path to a ``.py`` file or as a module name."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise UserError(f"plugin file {spec!r} does not exist; pass a path to a .py file or a module name")
        module_name = f"spd_bench_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ImportError as exc:
        raise UserError(f"cannot import plugin module {spec!r}: {exc}; pass a .py file path or an importable module") from exc


METHODS: Registry[Any] = Registry("method", "spd_bench.methods")
METHODS.register("base", "spd_bench.methods.base:Base")
METHODS.register("raw_sd", "spd_bench.methods.raw_sd:RawSD")
METHODS.register("spd", "spd_bench.methods.spd:SPD")
METHODS.register("spd_random", "spd_bench.methods.spd:SPDRandom")
TASKS: Registry[Any] = Registry("task", "spd_bench.tasks")
