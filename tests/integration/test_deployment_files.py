"""The Dockerfile and docker-compose.yml agree with the Blocks settings and CLI, and hold no secrets."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from blocks.cli import app
from blocks.infra.settings import Environment, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BLOCKS_SERVICES = ("migrate", "api", "worker")
EXPECTED_SERVICES = {"postgres", "temporal", "temporal-ui", *BLOCKS_SERVICES}
ENV_PREFIX = "BLOCKS_"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message} and $VAR.
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)
_SECRET_KEY = re.compile(
    r"PASSWORD|PWD|SECRET|TOKEN|API_KEY|PAYLOAD_KEYS|SIGNING_KEY|MASTER_KEYS", re.IGNORECASE
)


def _compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def _services() -> dict[str, dict[str, Any]]:
    services = _compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    assert services, "docker-compose.yml defines no services"
    return services


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment in either compose form; None means 'passed through from the host'."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) for item in raw]
        return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}
    assert isinstance(raw, dict), f"environment must be a list or a mapping, not {raw!r}"
    env: dict[str, str | None] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            env[key] = str(value).lower()
        else:
            env[key] = None if value is None else str(value)
    return env


def _interpolate(value: str) -> str:
    """What compose would substitute: a variable's default if it has one, else a dummy value."""

    def replace(match: re.Match[str]) -> str:
        if match["op"] in (":-", "-"):
            return match["arg"]
        return "dummy-value"

    return _INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def _settings_env_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def _cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return set(group.commands)


def _command_tokens(command: str | list[str]) -> list[str]:
    return list(command) if isinstance(command, list) else shlex.split(command)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _dockerfile_tokens(arguments: str) -> list[str]:
    if arguments.startswith("["):
        tokens = json.loads(arguments)
        assert isinstance(tokens, list)
        return [str(token) for token in tokens]
    return shlex.split(arguments)


def test_compose_defines_the_expected_services() -> None:
    services = _services()
    assert set(services) >= EXPECTED_SERVICES, f"missing: {EXPECTED_SERVICES - set(services)}"
    for name in BLOCKS_SERVICES:
        assert services[name].get("build") is not None, f"{name} does not build the Blocks image"
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]


def test_every_blocks_variable_is_a_settings_field() -> None:
    names = {
        (service_name, key)
        for service_name, service in _services().items()
        for key in _environment(service)
        if key.startswith(ENV_PREFIX)
    }
    assert names, "no BLOCKS_ variable is set on any service"
    unknown = sorted(
        f"{service}: {key}" for service, key in names if key not in _settings_env_names()
    )
    # pydantic-settings silently ignores an unknown BLOCKS_* variable, so a typo would go unseen.
    assert not unknown, f"not fields of Settings: {unknown}"


@pytest.mark.parametrize("service_name", BLOCKS_SERVICES)
def test_settings_validate_from_each_blocks_service_environment(
    service_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in _settings_env_names():
        monkeypatch.delenv(key, raising=False)
    env = _environment(_services()[service_name])
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and value is not None:
            monkeypatch.setenv(key, _interpolate(value))

    settings = Settings()

    assert settings.env is Environment.PROD, f"{service_name} does not run with BLOCKS_ENV=prod"
    assert settings.api_host == "0.0.0.0"  # noqa: S104 - the API must listen beyond the container
    assert settings.temporal_address == "temporal:7233"


def test_blocks_connects_as_a_non_superuser_role() -> None:
    """Superusers bypass row-level security, which keeps organizations apart in the database."""
    services = _services()
    superuser = _environment(services["postgres"]).get("POSTGRES_USER") or "postgres"
    for name in BLOCKS_SERVICES:
        url = _environment(services[name]).get("BLOCKS_DATABASE_URL")
        assert url, f"{name} has no BLOCKS_DATABASE_URL"
        assert make_url(_interpolate(url)).username != superuser, f"{name} connects as superuser"


def test_postgres_init_script_creates_the_databases() -> None:
    postgres = _services()["postgres"]
    mounts = [str(volume).split(":") for volume in postgres.get("volumes", [])]
    scripts = [ROOT / m[0] for m in mounts if m[1].startswith("/docker-entrypoint-initdb.d")]
    assert scripts, "postgres mounts no init script"
    sql = "\n".join(script.read_text() for script in scripts)
    for database in ("blocks", "temporal"):
        assert re.search(rf"CREATE DATABASE {database}\b", sql, re.IGNORECASE), database


def test_dockerfile_runs_the_blocks_command() -> None:
    instructions = _dockerfile_instructions()
    entrypoint = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    cmd = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmd or entrypoint, "the Dockerfile has neither CMD nor ENTRYPOINT"
    tokens = (_dockerfile_tokens(entrypoint[-1]) if entrypoint else []) + (
        _dockerfile_tokens(cmd[-1]) if cmd else []
    )
    assert tokens[0] == "blocks", f"the image runs {tokens}, not the blocks command"
    assert tokens[1:2] == ["api"], f"the default command is not `blocks api`: {tokens}"

    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0"), "the image runs as root"


def test_every_service_command_is_a_blocks_subcommand() -> None:
    commands = _cli_commands()
    services = _services()
    for name in BLOCKS_SERVICES:
        command = services[name].get("command")
        assert command, f"{name} has no command"
        tokens = _command_tokens(command)
        assert tokens[0] == "blocks", f"{name} runs {tokens}, not the blocks command"
        assert len(tokens) > 1, f"{name} runs `blocks` without a subcommand"
        assert tokens[1] in commands, f"{name}: `blocks {tokens[1]}` is no command of {commands}"
        assert tokens[1] == name, f"the {name} service runs `blocks {tokens[1]}`"


def test_compose_holds_no_literal_password() -> None:
    checked = 0
    for service_name, service in _services().items():
        for key, value in _environment(service).items():
            if value is None:
                continue
            if _SECRET_KEY.search(key):
                checked += 1
                assert re.fullmatch(_INTERPOLATION, value), (
                    f"{service_name}: {key} is not taken from the environment"
                )
            # A password inside a URL: scheme://user:password@host
            in_url = re.search(r"://[^:/@]+:([^@]*)@", value)
            if in_url:
                checked += 1
                assert re.fullmatch(_INTERPOLATION, in_url[1]), (
                    f"{service_name}: {key} holds a literal password"
                )
    assert checked, "no password variable found; is the compose file parsed?"

    init_sql = (ROOT / "deploy" / "postgres-init.sql").read_text()
    assert not re.search(r"PASSWORD\s+'", init_sql, re.IGNORECASE), "init script has a password"
