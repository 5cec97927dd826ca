"""Migrations: they describe the models exactly, and processes starting together apply them once, safely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tortoise.cli.cli import tortoise_cli_context
from tortoise.migrations.autodetector import MigrationAutodetector

from models.db import close_db, init_db, tortoise_config
from models.deployment import Deployment

OPEN_AND_WRITE = """
import asyncio, sys
from models.db import init_db, close_db
from models.deployment import Deployment
async def main():
    await init_db(sys.argv[1])
    await Deployment.create()
    await close_db()
asyncio.run(main())
"""


async def test_the_migrations_describe_the_models(tmp_path: Path) -> None:
    """`makemigrations` would find nothing to write: every model change comes with its migration."""
    config = tortoise_config(f"sqlite://{tmp_path / 'check.sqlite3'}")
    async with tortoise_cli_context(config) as ctx:
        writers = await MigrationAutodetector(ctx.apps, config["apps"]).changes()
    assert writers == [], "models changed without a migration: run makemigrations (see models/cli_config.py)"


async def test_processes_starting_together_migrate_once(database_url: str) -> None:
    """Four processes opening one fresh database at once all succeed, and each can write."""
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, database_url], stderr=subprocess.PIPE) for _ in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    await init_db(database_url)
    try:
        assert await Deployment.all().count() == 4
    finally:
        await close_db()
