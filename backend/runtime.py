"""The backend's parts wired together from :class:`~backend.config.Settings`.

The studio and ``python -m backend worker`` build one :class:`Backend` at their entry
point and pass it down; nothing below reads settings on its own. Empty Redis/AMQP URLs
select the in-process registry and bus (the embedded, one-machine mode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .assets.stores import open_blob_store
from .config import Settings
from .db import Database, migrate
from .ports.blob_store import BlobStore
from .ports.bus import Bus
from .ports.memory_bus import MemoryBus
from .ports.memory_registry import MemoryRegistry
from .ports.registry import Registry
from .workflows import Library

log = logging.getLogger(__name__)


@dataclass
class Backend:
    settings: Settings
    db: Database
    bus: Bus
    registry: Registry
    library: Library
    blobs: BlobStore
    _closed: bool = field(default=False, repr=False)

    @property
    def distributed(self) -> bool:
        """True when the bus and registry are shared servers (several processes may join)."""
        return bool(self.settings.redis_url and self.settings.amqp_url)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bus.close()
        self.registry.close()
        self.db.dispose()


def build_bus(settings: Settings) -> Bus:
    if not settings.amqp_url:
        return MemoryBus()
    from .ports.rabbitmq import RabbitBus

    return RabbitBus(settings.amqp_url, prefix=settings.bus_prefix)


def build_registry(settings: Settings) -> Registry:
    if not settings.redis_url:
        return MemoryRegistry()
    from .ports.redis_registry import RedisRegistry

    return RedisRegistry(settings.redis_url, prefix=settings.registry_prefix)


def build_backend(settings: Settings, *, upgrade_schema: bool = True) -> Backend:
    """Open the database (migrating it), the bus, the registry, the library and the blobs."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    if upgrade_schema:
        migrate.upgrade(db)
    library = Library.load(settings.workflows_dir)
    return Backend(
        settings=settings,
        db=db,
        bus=build_bus(settings),
        registry=build_registry(settings),
        library=library,
        blobs=open_blob_store(settings),
    )
