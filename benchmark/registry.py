"""A name -> entry table filled by the modules that define the entries, imported on the first lookup: the
one shape of the data-source, backbone and modality registries (so importing a registry stays cheap, and a
new entry is one module plus its name in the registry's module list)."""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

Entry = TypeVar("Entry")


class LazyRegistry(Generic[Entry]):
    """Entries of one kind. ``noun`` names the kind in errors ("backbone"); ``option`` the setting that
    selects one ("dataset" for data sources); ``modules`` are imported from ``package`` before a lookup."""

    def __init__(self, noun: str, package: str, modules: tuple[str, ...], *, option: str | None = None):
        self.noun, self.option = noun, option or noun
        self.package, self.modules = package, modules
        self._entries: dict[str, Entry] = {}
        self._imported = False

    def add(self, name: str, entry: Entry, *, same: Callable[[Entry, Entry], bool]) -> Entry:
        """Register ``entry`` as ``name``. A module imported twice registers ``same`` entry again, which is
        fine; a different entry under a taken name is an error."""
        if name in self._entries and not same(self._entries[name], entry):
            raise ValueError(f"{self.noun} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def _import_modules(self) -> None:
        if not self._imported:
            for module in self.modules:
                importlib.import_module(f"{self.package}.{module}")
            self._imported = True

    def names(self) -> tuple[str, ...]:
        self._import_modules()
        return tuple(self._entries)

    def get(self, name: str) -> Entry:
        self._import_modules()
        if name not in self._entries:
            raise ValueError(f"{self.option} must be one of {list(self._entries)}, got {name!r}")
        return self._entries[name]
