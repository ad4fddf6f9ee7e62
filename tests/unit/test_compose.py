"""The compose stack (``compose/``), checked statically: no Docker engine needed.

The file is read as ``docker compose`` would read it with no ``.env``: every
``${VAR:-default}`` takes its default, so the checks see what a first
``docker compose up`` runs.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from broker.config.durations import parse_duration
from broker.loading import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"

BACKING_SERVICES = ("postgres", "redis", "rabbitmq", "kafka")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str) -> str:
    """``text`` with compose's variables replaced as if none were set in the environment."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        if op in (":-", "-"):
            return arg
        if op in (":+", "+"):
            return ""
        raise AssertionError(f"${{{name}}} has no default: the stack needs it set to start")

    return _VARIABLE.sub(replace, text)


def _resolve(value: Any) -> Any:
    if isinstance(value, str):
        return interpolate(value)
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    return value


def _mapping(value: object, what: str) -> dict[str, Any]:
    assert isinstance(value, dict), f"{what}: expected a mapping, got {value!r}"
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # Safe loading keeps the YAML merge keys (`<<: *eventwire`) compose relies on.
    return _mapping(_resolve(yaml.safe_load(COMPOSE_FILE.read_text())), "the compose file")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = _mapping(compose.get("services"), "services")
    return {name: _mapping(service, f"services.{name}") for name, service in found.items()}


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the ``KEY=value`` list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """``depends_on`` targets and their conditions (the list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {str(name): "service_started" for name in deps}
    return {
        str(name): str(_mapping(spec or {}, name).get("condition", "service_started"))
        for name, spec in deps.items()
    }


def build_of(service: dict[str, Any]) -> tuple[Path, Path] | None:
    """The build context and Dockerfile of a service on the host, if it builds."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    build = _mapping(build, "build")
    context = (COMPOSE_DIR / str(build.get("context", "."))).resolve()
    return context, context / str(build.get("dockerfile", "Dockerfile"))


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[Path, PurePosixPath]]:
    """Host path and container path of each bind mount (named volumes are skipped)."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = str(volume["source"]), str(volume["target"])
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.partition(":")[0]
            if not source.startswith((".", "/", "~")):
                continue
        yield (COMPOSE_DIR / source).resolve(), PurePosixPath(target)


def host_path(service: dict[str, Any], container_path: PurePosixPath) -> Path | None:
    """Where ``container_path`` comes from on the host, through the deepest bind mount."""
    best: tuple[int, Path] | None = None
    for source, target in bind_mounts(service):
        if container_path == target or target in container_path.parents:
            depth = len(target.parts)
            if best is None or depth > best[0]:
                best = (depth, source / container_path.relative_to(target))
    return None if best is None else best[1]


def eventwire_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services.items()
        if str(service.get("image", "")).startswith("eventwire:") or "build" in service
    }


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"expected the JSON exec form, got {arguments!r}"
    return [str(item) for item in value]


def published_ports(service: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(host ip, host port, protocol) of each port a service publishes on the host."""
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") is not None:
                yield (
                    str(port.get("host_ip", "")),
                    str(port["published"]),
                    str(port.get("protocol", "tcp")),
                )
            continue
        spec, _, protocol = str(port).partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            continue  # a container port alone: an ephemeral host port
        host_ip = parts[0] if len(parts) == 3 else ""
        yield host_ip, parts[-2], protocol or "tcp"


# ----------------------------------------------------------------------------- images


def test_the_stack_has_the_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= {*BACKING_SERVICES, "migrate", "eventwire"}


def test_every_service_has_an_image_or_a_build_whose_dockerfile_exists(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        build = build_of(service)
        if build is None:
            assert service.get("image"), f"{name}: neither image nor build"
            continue
        context, dockerfile = build
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} is missing"


def test_image_tags_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            continue
        reference = str(image)
        if "@sha256:" in reference:
            continue  # a digest pins harder than any tag
        last = reference.rsplit("/", 1)[-1]
        assert ":" in last, f"{name}: image {reference!r} has no tag"
        tag = last.rsplit(":", 1)[1]
        assert tag and tag != "latest", f"{name}: image {reference!r} is not pinned"


# ----------------------------------------------------------------------------- ordering


def test_every_depends_on_target_exists(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            assert condition in CONDITIONS, f"{name}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", (
                    f"{name} waits for {target} to exit, but {target} restarts"
                )


def test_backing_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in BACKING_SERVICES:
        check = _mapping(services[name].get("healthcheck"), f"{name}.healthcheck")
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        test = check.get("test")
        assert test and test != ["NONE"], f"{name}: healthcheck has no test"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test!r}"


def test_the_service_starts_after_the_migration_and_its_backing_services(
    services: dict[str, dict[str, Any]],
) -> None:
    deps = depends_on(services["eventwire"])
    assert deps.get("migrate") == "service_completed_successfully"
    for name in BACKING_SERVICES:
        assert deps.get(name) == "service_healthy", f"eventwire should wait for {name}"
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    assert services["migrate"].get("command") == ["migrate"]


# ----------------------------------------------------------------------------- settings


def test_the_database_url_matches_the_postgres_service(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    postgres_env = environment(postgres)
    assert str(postgres["image"]).startswith("postgres:")
    assert postgres_env.get("PGPORT", "5432") == "5432"
    container_ports = {
        str(port["target"]) if isinstance(port, dict) else str(port).split("/")[0].split(":")[-1]
        for port in postgres.get("ports") or []
    }
    assert container_ports <= {"5432"}, "postgres listens on 5432 in its container"

    users = {name: environment(service) for name, service in eventwire_services(services).items()}
    assert {"migrate", "eventwire"} <= set(users)
    for name, env in users.items():
        assert "EVENTWIRE_DATABASE_URL" in env, f"{name}: EVENTWIRE_DATABASE_URL is not set"
        url = make_url(env["EVENTWIRE_DATABASE_URL"])
        assert url.drivername == "postgresql+asyncpg", name
        assert url.host == "postgres", f"{name}: database host {url.host!r}"
        assert url.port == 5432, f"{name}: database port {url.port!r}"
        assert url.username == postgres_env["POSTGRES_USER"], name
        assert url.password == postgres_env["POSTGRES_PASSWORD"], name
        assert url.database == postgres_env.get("POSTGRES_DB", postgres_env["POSTGRES_USER"])


def test_other_urls_name_services_of_the_stack(services: dict[str, dict[str, Any]]) -> None:
    for name, service in eventwire_services(services).items():
        queue_url = environment(service).get("EVENTWIRE_QUEUE_URL")
        if queue_url:
            assert make_url(queue_url).host in services, f"{name}: {queue_url!r}"


def test_the_stop_grace_period_outlasts_the_shutdown_grace(
    services: dict[str, dict[str, Any]],
) -> None:
    service = services["eventwire"]
    stop_grace = parse_duration(str(service.get("stop_grace_period", "10s")))
    shutdown_grace = parse_duration(environment(service).get("EVENTWIRE_SHUTDOWN_GRACE", "30s"))
    assert stop_grace > shutdown_grace, "SIGKILL would cut running invocations short"


# ----------------------------------------------------------------------------- config


def config_path_of(name: str, service: dict[str, Any]) -> PurePosixPath:
    """The configuration file a service reads: ``-c``/``--config``, else EVENTWIRE_CONFIG."""
    command = service.get("command") or []
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    for flag, value in itertools.pairwise(args):
        if flag in ("-c", "--config"):
            return PurePosixPath(value)
    config = environment(service).get("EVENTWIRE_CONFIG")
    assert config, f"{name}: no -c and no EVENTWIRE_CONFIG"
    return PurePosixPath(config)


def test_the_mounted_config_exists_and_loads(services: dict[str, dict[str, Any]]) -> None:
    service = services["eventwire"]
    path = config_path_of("eventwire", service)
    assert environment(service).get("EVENTWIRE_CONFIG", str(path)) == str(path)
    source = host_path(service, path)
    assert source is not None, f"nothing is mounted at {path}"
    assert source.is_file(), f"{source} (mounted at {path}) is missing"
    for volume in service["volumes"]:
        if isinstance(volume, str) and volume.split(":")[1] == str(path):
            assert volume.endswith(":ro"), "the configuration should be mounted read-only"

    config = load_config(source)
    assert config.functions, f"{source} configures no function"


def test_every_handler_is_in_the_container(services: dict[str, dict[str, Any]]) -> None:
    """Handlers import from the working directory: each must be mounted there and defined."""
    service = services["eventwire"]
    source = host_path(service, config_path_of("eventwire", service))
    assert source is not None
    workdir = PurePosixPath(str(service.get("working_dir", "/app")))
    for name, function in load_config(source).functions.items():
        if function.invoker != "python" or function.handler is None:
            continue
        module, _, attribute = function.handler.partition(":")
        relative = PurePosixPath(*module.split("."))
        candidates = [
            host_path(service, workdir / relative.with_suffix(".py")),
            host_path(service, workdir / relative / "__init__.py"),
        ]
        found = [path for path in candidates if path is not None and path.is_file()]
        assert found, f"{name}: {module} is not mounted under {workdir}"
        tree = ast.parse(found[0].read_text())
        defined = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        assert attribute in defined, f"{name}: {module} defines no {attribute!r}"


# ----------------------------------------------------------------------------- network


def test_published_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[tuple[str, str, str], str] = {}
    for name, service in services.items():
        ports = list(published_ports(service))
        replicas = _mapping(service.get("deploy") or {}, "deploy").get("replicas", 1)
        if ports:
            assert int(replicas) == 1, f"{name}: {replicas} replicas cannot share a host port"
        for port in ports:
            assert port not in seen, f"{name} and {seen[port]} both publish {port}"
            seen[port] = name


def test_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                source = str(volume.get("source", "")) if volume.get("type") == "volume" else ""
            else:
                source = str(volume).partition(":")[0]
                if source.startswith((".", "/", "~")):
                    continue
            if source:
                assert source in declared, f"{name}: volume {source!r} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {sorted(declared - used)}"


# ----------------------------------------------------------------------------- image


def test_the_dockerfile_runs_eventwire_as_a_non_root_user(
    services: dict[str, dict[str, Any]],
) -> None:
    build = build_of(services["eventwire"])
    assert build is not None
    context, dockerfile = build
    instructions = dockerfile_instructions(dockerfile)
    last = {keyword: arguments for keyword, arguments in instructions}

    assert last["FROM"].startswith("python:3.11-slim")
    assert exec_form(last["ENTRYPOINT"]) == ["eventwire"]
    assert exec_form(last["CMD"]) == ["serve"]
    assert last["STOPSIGNAL"] == "SIGTERM"
    user = last["USER"].split(":")[0]
    assert user not in ("root", "0"), "the image should not run as root"
    installs = [
        args for keyword, args in instructions if keyword == "RUN" and "pip install" in args
    ]
    extras = {
        extra
        for args in installs
        for group in re.findall(r"\.\[([a-z,]+)\]", args)
        for extra in group.split(",")
    }
    assert {"postgres", "redis", "kafka", "rabbitmq"} <= extras
    if "EVENTWIRE_API_LISTEN" in environment(services["eventwire"]):
        assert "http" in extras, "the Lambda API needs the http extra (aiohttp)"

    # Every file the Dockerfile copies from the context is there.
    for keyword, arguments in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        if "--from=" in arguments:
            continue  # copies from another stage, not from the context
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        for source in words[:-1]:
            assert (context / source).exists(), f"{keyword} {source}: not in {context}"


def test_the_dockerfile_copies_what_the_distribution_needs(
    services: dict[str, dict[str, Any]],
) -> None:
    build = build_of(services["eventwire"])
    assert build is not None
    context, dockerfile = build
    copied = {
        PurePosixPath(source).parts[0]
        for keyword, arguments in dockerfile_instructions(dockerfile)
        if keyword == "COPY"
        for source in shlex.split(arguments)[:-1]
        if not source.startswith("--")
    }
    project = tomllib.loads((context / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {str(pattern).rstrip("*.") for pattern in includes}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
