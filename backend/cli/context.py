"""What every CLI handler gets: settings, a lazily opened database, output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..db import Database


@dataclass
class Context:
    settings: Settings
    as_json: bool = False
    _db: Database | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Context":
        return cls(settings=Settings.load(config_file=args.config), as_json=args.json)

    @property
    def db(self) -> Database:
        if self._db is None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = Database(self.settings.effective_database_url)
        return self._db

    def emit(self, data: Any, text: str | None = None) -> None:
        """Print ``data`` as JSON with ``--json``, else ``text`` (or a plain rendering)."""
        if self.as_json:
            json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            print(text if text is not None else _plain(data))

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


def _plain(data: Any) -> str:
    if isinstance(data, dict):
        return "\n".join(f"{k}: {v}" for k, v in data.items())
    if isinstance(data, list):
        return "\n".join(_plain(item) if isinstance(item, dict) else str(item) for item in data)
    return str(data)
