"""Every third-party module the code imports is a declared requirement, of the core or of the
extra that needs it, so that ``pip install eventwire`` (plus an extra) is enough to run it.

Read from the installed distribution's own metadata (``pyproject.toml`` as pip saw it) and
from the source's imports, so a new import without a requirement fails here and not on a
newcomer's machine.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import metadata, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ("broker", "pollers", "invokers", "migrations")
DEVELOPMENT = ("tests", "benchmarks", "examples")
FIRST_PARTY = frozenset(RUNTIME + DEVELOPMENT)

# The modules that exist to speak an optional library, and the extra that installs it. Any
# other runtime module may import, at its top level, only what the core requires: it runs
# in every installation. A function-level import is lazy, behind a one-line error naming
# the extra (broker.extras.require and the poller registry say which).
EXTRA_OF = {
    "broker.queue.postgres": "postgres",
    "broker.queue.redis": "redis",
    "broker.history.writer": "redis",
    "broker.queue.redis_lua": "redis",
    "broker.history.process": "redis",
    "broker.destinations.redis_stream": "redis",
    "pollers.redis_streams": "redis",
    "broker.destinations.kafka": "kafka",
    "pollers.kafka": "kafka",
    "broker.destinations.amqp": "rabbitmq",
    "pollers.rabbitmq": "rabbitmq",
    "invokers.process": "process",
    "invokers.runtime_api": "process",
    "invokers.worker": "process",
    "invokers.http": "http",
    "broker.destinations.webhook": "http",
    "broker.api.lambda_api": "http",
    "broker.api.function_urls": "http",
    "broker.api.signatures": "http",
    "pollers.s3.webhook": "notifications",
    "pollers.s3.directory": "notifications",
    "broker.observability.otel": "tracing",
    "broker.aws.clients": "aws",
    "broker.destinations.sqs_sns": "aws",
    "pollers.sqs.outcomes": "aws",
    "pollers.sqs.poller": "aws",
    "pollers.sqs.reader": "aws",
    "pollers.sqs.receive": "aws",
    "pollers.sqs.redelivery": "aws",
    "pollers.sqs.visibility": "aws",
}


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # as written: "aiokafka.structs"
    line: int
    top_level: bool  # run when the importing module is imported (not in a function)

    @property
    def root(self) -> str:
        return self.module.partition(".")[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in FIRST_PARTY:
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    tree = ast.parse(sources()[module].read_text(), str(sources()[module]))
    package = module if sources()[module].name == "__init__.py" else module.rpartition(".")[0]
    return tuple(_imports(tree.body, package, top_level=True))


def _imports(body: list[ast.stmt], package: str, *, top_level: bool) -> Iterator[Import]:
    for node in body:
        if isinstance(node, ast.Import):
            yield from (Import(alias.name, node.lineno, top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from _from_import(node, package, top_level)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            continue  # never run; mypy reads them, and mypy's own stubs are not ours to declare
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(_statements(node), package, top_level=False)
        else:
            yield from _imports(_statements(node), package, top_level=top_level)


def _from_import(node: ast.ImportFrom, package: str, top_level: bool) -> Iterator[Import]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = package.split(".")
        base = ".".join(
            parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
        )
    yield Import(base, node.lineno, top_level)
    for alias in node.names:  # `from broker.queue import redis` imports a module too
        if f"{base}.{alias.name}" in sources():
            yield Import(f"{base}.{alias.name}", node.lineno, top_level)


def _statements(node: ast.AST) -> list[ast.stmt]:
    children: list[ast.stmt] = []
    for field in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(node, field, []):
            if isinstance(child, ast.ExceptHandler):
                children += child.body
            elif isinstance(child, ast.stmt):
                children.append(child)
    return children


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def is_third_party(root: str) -> bool:
    return root not in sys.stdlib_module_names and root not in FIRST_PARTY


@cache
def declared(extra: str = "") -> frozenset[str]:
    """The distributions ``pip install 'eventwire[extra]'`` brings itself (``""``: the core)."""
    names: set[str] = set()
    for text in requires("eventwire") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        if canonicalize_name(requirement.name) == "eventwire":  # dev = eventwire[postgres,...]
            names |= {name for e in requirement.extras for name in declared(e)}
        else:
            names.add(canonicalize_name(requirement.name))
    return frozenset(names)


def extras() -> set[str]:
    return set(metadata("eventwire").get_all("Provides-Extra") or [])


@cache
def distributions(root: str) -> frozenset[str]:
    return frozenset(canonicalize_name(d) for d in _packages().get(root, []))


@cache
def _packages() -> dict[str, list[str]]:
    return dict(packages_distributions())


def runtime_modules() -> list[str]:
    return [m for m in sources() if m.partition(".")[0] in RUNTIME]


def test_the_extras_are_the_backends() -> None:
    """The extras the README and the one-line errors name, and no more."""
    assert extras() == {
        "postgres", "redis", "kafka", "rabbitmq", "process", "http", "notifications", "aws",
        "tracing",
        "dev",
    }  # fmt: skip
    assert set(EXTRA_OF.values()) <= extras()
    assert set(EXTRA_OF) <= set(sources()), set(EXTRA_OF) - set(sources())


@pytest.mark.parametrize("part", ["runtime", "development"])
def test_every_import_is_a_declared_requirement(part: str) -> None:
    allowed = declared().union(
        *(declared(extra) for extra in extras() if part == "development" or extra != "dev")
    )
    packages = RUNTIME if part == "runtime" else DEVELOPMENT
    undeclared = []
    for module, path in sources().items():
        if module.partition(".")[0] not in packages:
            continue
        for imp in imports_of(module):
            if not is_third_party(imp.root):
                continue
            found = distributions(imp.root)
            if not found:
                undeclared.append(
                    f"{path.relative_to(REPO)}:{imp.line}: {imp.module} is not installed"
                )
            elif not found & allowed:
                undeclared.append(
                    f"{path.relative_to(REPO)}:{imp.line}: {imp.module} comes from "
                    f"{', '.join(sorted(found))}, which no requirement declares"
                )
    assert not undeclared, "\n".join(undeclared)


def test_each_extra_installs_what_its_modules_import() -> None:
    """What a module imports when it is imported, and what the modules it imports at their
    top level import in turn, comes with the core or with the module's own extra."""
    wrong = []
    for module in runtime_modules():
        extra = EXTRA_OF.get(module, "")
        allowed = declared(extra)
        for imp, via in top_level_closure(module):
            if not is_third_party(imp.root):
                continue
            missing = distributions(imp.root) - allowed
            if missing and not distributions(imp.root) & allowed:
                chain = " -> ".join([*via, imp.module])
                wrong.append(
                    f"{module} ({'the extra ' + extra if extra else 'the core'}) imports "
                    f"{imp.module} from {', '.join(sorted(missing))}: {chain}"
                )
    assert not wrong, "\n".join(wrong)


def top_level_closure(module: str) -> Iterator[tuple[Import, list[str]]]:
    """The imports run by importing ``module``, each with the first-party chain to it."""
    seen = {module}
    stack: list[tuple[str, list[str]]] = [(module, [module])]
    while stack:
        current, via = stack.pop()
        for imp in imports_of(current):
            if not imp.top_level:
                continue
            if imp.root in FIRST_PARTY:
                for name in _first_party(imp.module):
                    if name not in seen:
                        seen.add(name)
                        stack.append((name, [*via, name]))
            else:
                yield imp, via


def _first_party(module: str) -> list[str]:
    """``module`` and the packages above it, each run when it is imported."""
    parts = module.split(".")
    names = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return [name for name in names if name in sources()]
