"""A secret from settings, or, outside prod, one generated once into the data dir (mode 0600)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from blocks.infra.settings import Environment, Settings


def configured_or_dev_key(
    configured: SecretStr | None,
    settings: Settings,
    *,
    variable: str,
    file_name: str,
    new_spec: Callable[[], str],
    error: type[Exception],
) -> str:
    """The configured key spec; in dev and test, the data dir's own (shared by its processes)."""
    if configured is not None:
        return configured.get_secret_value()
    if settings.env is Environment.PROD:
        raise error(f"{variable} is required when BLOCKS_ENV=prod")
    return load_or_create_key_file(settings.data_dir / file_name, new_spec)


def load_or_create_key_file(path: Path, new_spec: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = new_spec()
    try:
        # Created 0600 before any content lands in it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the same data dir won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(spec)
    return spec
