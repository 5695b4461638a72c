"""The root's nouns, each built the first time something asks for it by name.

Building the whole tree up front costs every run the import of every noun's module and Typer's reading of
every command function's signature (~90 of them), though one command runs. The root instead holds a table of
its nouns (name, module, one-line help, section) and a mapping whose keys are every name, eager or not, and
whose values are built on first access. Click and Typer look a sub-command up by `commands.get(name)` and
suggest names from `commands`' keys, so parsing, usage errors and "Did you mean" see the same tree as before;
only what reads the values (help of the root, completion of the root's words) is told to use the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Noun:
    """A sub-command of the root whose Typer app lives in `module` as `attribute`."""

    name: str
    module: str
    attribute: str
    short_help: str
    section: str
    hidden: bool = False


Built = Callable[[str, click.Command], None]


class LazyCommands(MutableMapping[str, click.Command]):
    """The root's sub-commands: `eager` as given, then `nouns`, each built by `build` when first looked up."""

    def __init__(self, eager: MutableMapping[str, click.Command], nouns: tuple[Noun, ...],
                 build: Callable[[Noun], click.Command]) -> None:
        self._built = dict(eager)
        self._pending = {noun.name: noun for noun in nouns if noun.name not in self._built}
        # Typer lists a group's own commands before its sub-apps: the same order, for completion's sake.
        self._order = [*self._built, *self._pending]
        self._build = build
        self._hooks: list[Built] = []

    def __getitem__(self, name: str) -> click.Command:
        command = self._built.get(name)
        if command is None:
            noun = self._pending[name]  # KeyError for a name we do not have, as a dict says it
            command = self._built[name] = self._build(noun)
            del self._pending[name]
            for hook in self._hooks:
                hook(name, command)
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._pending.pop(name, None)
        if name not in self._built:
            self._order.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name in self._pending:
            del self._pending[name]
        else:
            del self._built[name]
        self._order.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        # Mapping's own __contains__ would build the command to answer.
        return name in self._built or name in self._pending

    def pending(self, name: str) -> Noun | None:
        """The table's row for a noun not built yet (what its summary in the root's help needs)."""
        return self._pending.get(name)

    def built(self) -> dict[str, click.Command]:
        """The sub-commands built so far."""
        return dict(self._built)

    def when_built(self, hook: Built) -> None:
        """Call `hook(name, command)` for every noun built from now on (completion attaches its lookups)."""
        self._hooks.append(hook)
