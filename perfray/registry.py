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
        self._flags: dict[str, dict[str, Any]] = {}

    def register(self, name: str, target: str, **flags: Any) -> None:
        """``flags``: what the plugin can do, recorded here so that checking a config needs no import of it."""
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if ":" not in target:
            raise ValueError(f"{self.kind} target must look like 'module:Class', got {target!r}")
        self._targets[name] = target
        self._flags[name] = flags

    def flag(self, name: str, flag: str, default: Any = None) -> Any:
        """A capability recorded at registration (``default`` when not recorded)."""
        self.known(name)
        return self._flags[name].get(flag, default)

    def having(self, flag: str) -> list[str]:
        """Names registered with a true ``flag`` (a non-empty one)."""
        return [n for n in self.names() if self._flags[n].get(flag)]

    def known(self, name: str) -> str:
        """``name`` when registered, else a UsageError naming the known ones."""
        if name not in self._targets:
            raise UsageError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return name

    def names(self) -> list[str]:
        return sorted(self._targets)

    def load(self, name: str) -> Any:
        """Import and return the class registered as ``name``."""
        module_name, _, attr = self._targets[self.known(name)].partition(":")
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
