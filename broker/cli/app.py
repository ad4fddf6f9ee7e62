"""What every ``eventwire`` command and group is built from.

Help names what a value is (``FUNCTION``, ``FILE``, ``DURATION``), as each parameter's
``metavar`` says, shows nothing after a flag, and writes a required argument ``FUNCTION``
and an optional one ``[FUNCTION]``. Typer's own rendering adds the Python type (``<str>``,
``<bool>``), even beside a metavar and for ``--help``; these classes leave it out.
``tests/unit/test_cli_help.py`` renders every command's help and holds it to that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class _NamedOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        return super().display_type_rich(ctx)


class _NamedArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:  # the name column already shows it
            return None
        return super().display_type_rich(ctx)

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        """``FUNCTION`` when required and ``[FUNCTION]`` when not, as Click has it (Typer
        writes ``{FUNCTION}``, which reads like a set)."""
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return [name if self.required else f"[{name}]"]


_NAMED: dict[type, type] = {TyperOption: _NamedOption, TyperArgument: _NamedArgument}


def _named(params: list[Any]) -> list[Any]:
    """The parameters, each of the subclass above that renders it (they add no state)."""
    for param in params:
        named = _NAMED.get(type(param))
        if named is not None:
            param.__class__ = named
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _named(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _named(super().get_params(ctx))


class App(typer.Typer):
    """A Typer app whose groups and commands render help as above."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(**kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        kwargs.setdefault("cls", Command)
        return super().command(name, **kwargs)
