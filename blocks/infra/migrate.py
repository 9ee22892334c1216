"""Apply the Alembic migrations shipped with Blocks to a database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _script_location() -> Path:
    # A source checkout keeps migrations/ beside the package; a wheel ships them inside it.
    for candidate in (_PACKAGE_ROOT.parent / "migrations", _PACKAGE_ROOT / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("Blocks migrations are missing from this installation")


def upgrade_database(database_url: str, revision: str = "head") -> None:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    # ConfigParser interpolation would treat a % in the password as a reference.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, revision)
