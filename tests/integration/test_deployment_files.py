"""The Dockerfile and docker-compose.yml agree with the Blocks settings and CLI, hold no secrets,
and give each service only the secrets it needs (docker is not needed: the files are parsed, and
deploy/generate-secrets.sh is run for real)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from blocks.cli import app
from blocks.infra.crypto.signing import parse_public_keys, parse_signing_key
from blocks.infra.settings import Environment, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GENERATE_SECRETS = ROOT / "deploy" / "generate-secrets.sh"
BLOCKS_SERVICES = ("migrate", "api", "worker")
EXPECTED_SERVICES = {"postgres", "temporal", "temporal-ui", "proxy", *BLOCKS_SERVICES}
ENV_PREFIX = "BLOCKS_"
# What the operator sets in the shell or .env (the compose file's ${...} variables).
HOST_ENV = {"BLOCKS_PUBLIC_URL": "https://blocks.example.com"}

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
        name = match["name"] or match["bare"]
        if name in HOST_ENV:
            return HOST_ENV[name]
        if match["op"] in (":-", "-"):
            return match["arg"]
        return "dummy-value"

    return _INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def _read_env_file(path: Path) -> dict[str, str]:
    """A compose env file: KEY=VALUE lines, taken literally (the generator writes no quotes)."""
    pairs = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line]
    return {key.strip(): value for key, value in pairs if not key.lstrip().startswith("#")}


def _env_files(service: dict[str, Any]) -> list[str]:
    raw = service.get("env_file") or []
    entries = [raw] if isinstance(raw, str | dict) else list(raw)
    return [entry["path"] if isinstance(entry, dict) else str(entry) for entry in entries]


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/generate-secrets.sh run for real, into a directory of its own."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: deploy/generate-secrets.sh needs it")
    target = tmp_path_factory.mktemp("deploy") / "secrets"
    subprocess.run(["sh", str(GENERATE_SECRETS), str(target)], check=True, capture_output=True)
    return target


def _service_env(name: str, secrets: Path) -> dict[str, str]:
    """What a container gets: its env files (read from the generated ones), then `environment`
    over them (compose's precedence), with ${...} substituted as compose would."""
    service = _services()[name]
    env: dict[str, str] = {}
    for path in _env_files(service):
        assert path.startswith("deploy/secrets/"), f"{name} reads secrets from {path}"
        env.update(_read_env_file(secrets / Path(path).name))
    for key, value in _environment(service).items():
        if value is not None:
            env[key] = _interpolate(value)
    return env


def _settings_env_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def _cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    # Listed, not read from `group.commands`: each command is loaded from its module on demand.
    return set(group.list_commands(typer.Context(group)))


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


def test_every_blocks_variable_is_a_settings_field(secrets_dir: Path) -> None:
    names = {
        (service_name, key)
        for service_name in _services()
        for key in _service_env(service_name, secrets_dir)
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
    service_name: str, secrets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in _settings_env_names():
        monkeypatch.delenv(key, raising=False)
    for key, value in _service_env(service_name, secrets_dir).items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)

    settings = Settings()

    assert settings.env is Environment.PROD, f"{service_name} does not run with BLOCKS_ENV=prod"
    assert settings.api_host == "0.0.0.0"  # noqa: S104 - the API must listen beyond the container
    assert settings.temporal_address == "temporal:7233"
    assert settings.public_url == HOST_ENV["BLOCKS_PUBLIC_URL"]


def test_blocks_connects_as_a_non_superuser_role(secrets_dir: Path) -> None:
    """Superusers bypass row-level security, which keeps organizations apart in the database."""
    superuser = _environment(_services()["postgres"]).get("POSTGRES_USER") or "postgres"
    for name in BLOCKS_SERVICES:
        url = _service_env(name, secrets_dir).get("BLOCKS_DATABASE_URL")
        assert url, f"{name} has no BLOCKS_DATABASE_URL"
        assert make_url(url).username != superuser, f"{name} connects as superuser"


def test_the_api_and_worker_connect_as_the_app_role_and_only_migrate_as_the_owner(
    secrets_dir: Path,
) -> None:
    """The owner may rewrite the audit log; the app role may only INSERT and SELECT it."""
    for name in ("api", "worker"):
        env = _service_env(name, secrets_dir)
        assert make_url(env["BLOCKS_DATABASE_URL"]).username == "blocks", name
        assert "BLOCKS_MIGRATION_DATABASE_URL" not in env, f"{name} has the owner's URL"
    migrate = _service_env("migrate", secrets_dir)
    assert make_url(migrate["BLOCKS_MIGRATION_DATABASE_URL"]).username == "blocks_owner"


def test_each_secret_reaches_only_the_services_that_need_it(secrets_dir: Path) -> None:
    """No credential opens more than its holder needs: each generated secret is found in the
    environment of exactly the services listed here, and the four passwords differ."""
    postgres = _read_env_file(secrets_dir / "postgres.env")
    worker = _read_env_file(secrets_dir / "worker.env")
    passwords = {
        "superuser": postgres["POSTGRES_PASSWORD"],
        "owner": postgres["DB_OWNER_PASSWORD"],
        "app": postgres["DB_APP_PASSWORD"],
        "temporal": postgres["DB_TEMPORAL_PASSWORD"],
    }
    assert len(set(passwords.values())) == len(passwords), "two roles share a password"
    assert all(re.fullmatch(r"[0-9a-f]{48}", p) for p in passwords.values()), "not URL-safe"
    holders = {
        passwords["superuser"]: {"postgres"},
        passwords["owner"]: {"postgres", "migrate"},
        passwords["app"]: {"postgres", "api", "worker"},
        passwords["temporal"]: {"postgres", "temporal"},
        worker["BLOCKS_AUDIT_SIGNING_KEY"].partition(":")[2]: {"worker"},
        worker["BLOCKS_PAYLOAD_KEYS"].partition(":")[2]: {"migrate", "api", "worker"},
        worker["BLOCKS_MASTER_KEYS"].partition(":")[2]: {"migrate", "api", "worker"},
    }
    for name in _services():
        values = "\n".join(_service_env(name, secrets_dir).values())
        for secret, expected in holders.items():
            assert (secret in values) == (name in expected), (
                f"{name} {'lacks' if name in expected else 'holds'} a secret meant for {expected}"
            )


def test_the_signing_key_is_only_on_the_worker_and_the_api_has_its_public_key(
    secrets_dir: Path,
) -> None:
    holders = [
        name
        for name in _services()
        if "BLOCKS_AUDIT_SIGNING_KEY" in _service_env(name, secrets_dir)
    ]
    assert holders == ["worker"], f"the signing key is on {holders}"
    signer = parse_signing_key(_service_env("worker", secrets_dir)["BLOCKS_AUDIT_SIGNING_KEY"])
    published = parse_public_keys(_service_env("api", secrets_dir)["BLOCKS_AUDIT_PUBLIC_KEYS"])
    # openssl derived the public key the API publishes from the seed the worker signs with.
    assert published.by_id() == {signer.key_id: signer.public().b64()}


def test_generating_secrets_again_refuses_to_replace_them(secrets_dir: Path) -> None:
    before = (secrets_dir / "api.env").read_text()
    again = subprocess.run(
        ["sh", str(GENERATE_SECRETS), str(secrets_dir)], capture_output=True, text=True
    )
    assert again.returncode != 0
    assert "refusing" in again.stderr
    assert (secrets_dir / "api.env").read_text() == before
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in secrets_dir.glob("*.env"))
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"


def test_secrets_and_certificates_stay_out_of_git_and_the_image() -> None:
    for folder in ("secrets", "tls"):
        ignore = (ROOT / "deploy" / folder / ".gitignore").read_text().split()
        assert "*" in ignore, f"deploy/{folder} is not ignored by git"
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert {"deploy/secrets/", "deploy/tls/"} <= set(dockerignore)


def _published(service: dict[str, Any]) -> list[str]:
    return [str(port) for port in service.get("ports", [])]


def test_only_the_proxy_listens_beyond_loopback_and_the_temporal_ui_is_loopback_only() -> None:
    """The Temporal UI has no sign-in and shows every organization's runs."""
    services = _services()
    ui_ports = _published(services["temporal-ui"])
    assert ui_ports, "the Temporal UI is not published at all"
    assert all(port.startswith("127.0.0.1:") for port in ui_ports), ui_ports
    for name, service in services.items():
        if name != "proxy":
            for port in _published(service):
                assert port.startswith("127.0.0.1:"), f"{name} listens on every address: {port}"
    assert not _published(services["api"]), "the API is reachable around the TLS proxy"
    assert {p.split(":")[-1] for p in _published(services["proxy"])} == {"80", "443"}


def test_the_api_believes_forwarded_headers_from_the_proxy_alone(secrets_dir: Path) -> None:
    services = _services()
    proxy_address = services["proxy"]["networks"]["edge"]["ipv4_address"]
    trusted = json.loads(_service_env("api", secrets_dir)["BLOCKS_TRUSTED_PROXIES"])
    assert trusted == [proxy_address]
    # The proxy and the API share a network with nothing else on it.
    on_edge = sorted(n for n, s in services.items() if "edge" in (s.get("networks") or []))
    assert on_edge == ["api", "proxy"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"server\s+api:8000\s*;", conf), "nginx does not proxy to the api service"
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$remote_addr\s*;", conf)
    assert re.search(r"proxy_set_header\s+X-Forwarded-Proto\s+\$scheme\s*;", conf)


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


def test_the_image_installs_the_locked_dependencies_with_their_hashes() -> None:
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    copies = [args for keyword, args in _dockerfile_instructions() if keyword == "COPY"]
    assert any(args.split()[0] == "requirements.txt" for args in copies)
    assert any("--require-hashes" in args and "-r requirements.txt" in args for args in runs)
    # Blocks itself is installed without resolving its dependencies again.
    assert any(re.search(r"pip install --no-deps \.(\s|$)", args) for args in runs), runs


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
        for key in _environment(service):
            # Secrets come from each service's env file, never from the compose file.
            assert not _SECRET_KEY.search(key), f"{service_name}: {key} is set in the compose file"
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
    assert checked == 0, "a password or key is set in docker-compose.yml"
    assert all(_env_files(_services()[name]) for name in ("postgres", "temporal", *BLOCKS_SERVICES))

    init_sql = (ROOT / "deploy" / "postgres-init.sql").read_text()
    assert not re.search(r"PASSWORD\s+'", init_sql, re.IGNORECASE), "init script has a password"
