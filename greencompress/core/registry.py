"""Registries: one per extension point (techniques, runtimes, meters), filled by greencompress and by plugins.

A registry maps a name to an entry and remembers where each entry came from. Built-in entries
register when their module is imported; installed packages add theirs through an entry-point
group (`greencompress.techniques`, `greencompress.runtimes`, `greencompress.meters`), loaded the
first time the registry is read. An entry point names the object to register:

    [project.entry-points."greencompress.techniques"]
    round_weights = "my_package.rounding:RoundWeights"
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

log = logging.getLogger(__name__)

Entry = TypeVar("Entry")


@dataclass(frozen=True)
class Origin:
    """Where a registered entry comes from: greencompress itself, or an installed package's entry point."""

    package: str  # "greencompress" or the distribution that declared the entry point
    reference: str  # "module:attribute"


class UnknownName(LookupError):
    """A name no entry is registered under; the message lists the closest names."""

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[Entry]):
    """Named entries of one kind, in registration order (the order of trust, for meters)."""

    def __init__(self, kind: str, entry_point_group: str, name_of: Callable[[Entry], str]):
        self.kind = kind
        self.group = entry_point_group
        self._name_of = name_of
        self._entries: dict[str, Entry] = {}
        self._origins: dict[str, Origin] = {}
        self._plugins_loaded = False

    def register(self, entry: Entry, origin: Origin | None = None) -> Entry:
        """Add `entry` under its name; a second entry with the same name is refused. Returns the entry (a decorator)."""
        name = self._name_of(entry)
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(
                f"{self.kind} {name!r} is registered twice: by {self._origins[name].reference} and by "
                f"{origin.reference if origin else _reference(entry)}"
            )
        self._entries[name] = entry
        self._origins[name] = origin or Origin("greencompress", _reference(entry))
        return entry

    def get(self, name: str) -> Entry:
        """The entry called `name`; UnknownName, listing the closest names, when there is none."""
        self._load_plugins()
        if name not in self._entries:
            raise UnknownName(unknown_choice(self.kind, name, list(self._entries)))
        return self._entries[name]

    def names(self) -> list[str]:
        self._load_plugins()
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        self._load_plugins()
        return iter(list(self._entries.values()))

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def origin(self, name: str) -> Origin:
        self._load_plugins()
        return self._origins[name]

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for point in metadata.entry_points(group=self.group):
            package = point.dist.name if point.dist is not None else "unknown package"
            try:
                entry = point.load()
                entry = entry() if isinstance(entry, type) else entry  # a class names its default instance
            except Exception as error:  # a broken plugin must not break greencompress: say so and go on
                log.warning("%s plugin %r from %s could not be loaded: %r", self.kind, point.name, package, error)
                continue
            self.register(entry, Origin(package, point.value))


def unknown_choice(what: str, given: str, choices: list[str]) -> str:
    """`unknown <what> 'x'; did you mean 'y'?` or the list of valid choices."""
    close = (
        difflib.get_close_matches(given, choices, n=3)
        or [choice for choice in choices if given and (choice.startswith(given) or given in choice)][:3]
    )  # `onnx` for onnxruntime: a prefix is too short a string for a close match
    if close:
        return f"unknown {what} {given!r}; did you mean {', '.join(repr(c) for c in close)}?"
    return f"unknown {what} {given!r}" + (f"; known: {', '.join(choices)}" if len(choices) <= 12 else "")


def _reference(entry) -> str:
    kind = entry if isinstance(entry, type) else type(entry)
    return f"{kind.__module__}:{getattr(entry, '__qualname__', kind.__qualname__)}"
