"""The one registry shape every plug-in point uses: a decorator mapping a config name to an implementation.

    EXTRACTORS: dict[str, type[FeatureExtractor]] = {}
    register_extractor = registrar(EXTRACTORS)

    @register_extractor("mfcc")
    class Mfcc: ...

Config validation asks the same table (`name in EXTRACTORS`), so adding a plug-in is a file and a
registration, never a name list kept by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def registrar(table: dict[str, T]) -> Callable[[str], Callable[[T], T]]:
    """A decorator factory: `registrar(table)(name)` adds the decorated class or function to `table` as `name`.

    Raises:
        ValueError: (when decorating) `name` is already registered, so two plug-ins would share one config name.
    """

    def register(name: str) -> Callable[[T], T]:
        def add(implementation: T) -> T:
            if name in table and _origin(table[name]) != _origin(implementation):
                raise ValueError(f"{name!r} is registered twice: {table[name]!r} and {implementation!r}")
            table[name] = implementation
            return implementation

        return add

    return register


def _origin(implementation: object) -> tuple[str, str]:
    # A module imported again (importlib.reload) registers a new object of the same origin; that is no clash.
    return getattr(implementation, "__module__", ""), getattr(implementation, "__qualname__", repr(implementation))


def unknown(what: str, name: str, table: dict) -> str:
    """The message for a name the registry does not hold, listing what it does."""
    return f"unknown {what} {name!r}; choose one of {sorted(table)}"


@dataclass(frozen=True)
class Requirement:
    """A package a plug-in imports when it runs; `unitvox.preflight` checks it before a run starts.

    A plug-in declares what it needs as a class attribute, `requires = (Requirement(...), ...)`.

    Attributes:
        module: the top-level module to look for (`importlib.util.find_spec`), e.g. "webrtcvad".
        install: the command that installs it, e.g. "pip install --no-deps resemblyzer webrtcvad-wheels".
    """

    module: str
    install: str


def requirements(implementation: object) -> tuple[Requirement, ...]:
    """What a registered plug-in declares it needs (its `requires`), or nothing."""
    return tuple(getattr(implementation, "requires", ()))
