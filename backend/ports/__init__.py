"""Ports: the interfaces of external dependencies, each beside its adapters.

| port | interface | production | embedded/test |
|---|---|---|---|
| node registry | ``registry.Registry`` | ``redis_registry.RedisRegistry`` | ``memory_registry.MemoryRegistry`` |
| message bus | ``bus.Bus`` | ``rabbitmq.RabbitBus`` | ``memory_bus.MemoryBus`` |

No business logic lives in an adapter; one contract test suite runs against both.
"""
