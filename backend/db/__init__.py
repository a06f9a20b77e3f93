"""The SQL database: models, the engine wrapper and migrations."""

from .database import Database
from . import models

__all__ = ["Database", "models"]
