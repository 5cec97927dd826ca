"""Config for Tortoise's own CLI, used only by developers to write migrations:

    DATABASE_URL=sqlite:///tmp/scratch.sqlite3 .venv/bin/tortoise -c models.cli_config.TORTOISE_ORM makemigrations

It reads DATABASE_URL when imported (the CLI needs a module-level dict); nothing in the service imports it.
"""

from __future__ import annotations

import os

from models.db import tortoise_config

TORTOISE_ORM = tortoise_config(os.environ.get("DATABASE_URL", "sqlite://deployer.sqlite3"))
