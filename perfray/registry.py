"""Name → "module:Class" registries, imported lazily so heavy libraries load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from perfray.errors import UsageError


class Registry:
    """A small plugin registry: register by name, reject duplicates, raise on unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}

    def register(self, name: str, target: str) -> None:
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if ":" not in target:
            raise ValueError(f"{self.kind} target must look like 'module:Class', got {target!r}")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def load(self, name: str) -> Any:
        """Import and return the class registered as ``name``."""
        try:
            target = self._targets[name]
        except KeyError:
            raise UsageError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None
        module_name, _, attr = target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def available(self) -> list[str]:
        """Names whose class says it can run here (imports each plugin)."""
        out = []
        for name in self.names():
            try:
                if self.load(name).is_available():
                    out.append(name)
            except ImportError:
                continue
        return out
