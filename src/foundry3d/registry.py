"""One registry mechanism for every named thing: model variants, student kinds, datasets, builders,
converters and CLI verbs all register here by name and are looked up with one clear error.

Pointcept-style: ``REG = Registry("student kind")``; ``@REG.register("name")`` on a class or
function; ``REG.get("name")``. Lookups of unknown names list what is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from foundry3d.errors import Foundry3DError

T = TypeVar("T")


class RegistryError(Foundry3DError, ValueError):
    """An unknown or duplicate name; ``str()`` is the plain message (not KeyError's repr)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named things of one kind (variants, student kinds, tasks, datasets ...): register once, look up with an
    error that lists the known names."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, obj: T | None = None, **info: Any) -> Any:
        """``register("n", obj)`` or as a decorator ``@register()`` / ``@register("n")``."""

        def add(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not key:
                raise RegistryError(f"cannot register an unnamed {self.what}")
            if key in self._items and self._items[key] is not o:
                raise RegistryError(f"{self.what} {key!r} is already registered")
            self._items[key] = o
            self._info[key] = info
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The entry registered as ``name``, or a one-line error listing what is registered."""
        if name not in self._items:
            raise RegistryError(f"unknown {self.what} {name!r}; registered: {', '.join(self.names()) or 'none'}")
        return self._items[name]

    def info(self, name: str) -> dict[str, Any]:
        """The flags ``name`` was registered with (e.g. a student kind's ``learned``)."""
        self.get(name)
        return dict(self._info[name])

    def names(self) -> list[str]:
        """Every registered name, sorted (what help texts and errors list)."""
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs in name order."""
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"


def lookup(registry: Registry[Callable[..., T]], name: str, *args: Any, **kwargs: Any) -> T:
    """Build the registered ``name`` with the given arguments."""
    return registry.get(name)(*args, **kwargs)
