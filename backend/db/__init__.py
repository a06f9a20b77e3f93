"""The SQL database: models, the engine wrapper and migrations.

``models`` holds the backend's tables and ``studio_models`` the sessions, settings and
preferences tables (which import ``models``' ``Base``, never the other way round);
importing the package loads both, so ``models.Base.metadata`` always knows every table.
"""

from . import api_models, models, studio_models
from .database import Database, rows_changed

__all__ = ["Database", "models", "rows_changed", "studio_models"]
