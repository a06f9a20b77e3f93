"""Settings: loaded once at the entry point, then passed down explicitly.

Sources, later ones winning: the defaults below, an optional TOML file (``--config`` or
``STUDIO_CONFIG``), then ``STUDIO_*`` environment variables. Nothing below the entry
point reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

SIGNUP_MODES = ("open", "invite", "off")
ASSET_STORES = ("local", "s3")
#: The per-user limits (backend/jobs/limits.py): each a setting for creators and one
#: prefixed ``admin_`` for administrators.
LIMITS = ("max_waiting_jobs", "max_running_jobs", "submits_per_minute", "daily_spend_cap", "storage_quota_mb")


@dataclass(frozen=True)
class Settings:
    """Everything an entry point needs to build the backend.

    Empty ``redis_url``/``amqp_url`` select the in-process registry and bus; an empty
    ``comfyui_urls`` selects the embedded simulated node.
    """

    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file under data_dir
    redis_url: str = ""
    amqp_url: str = ""
    #: Name prefixes of the RabbitMQ queues/exchanges and the Redis keys; every studio,
    #: worker and agent of one deployment must use the same (several may share servers).
    bus_prefix: str = "studio"
    registry_prefix: str = "studio"
    comfyui_urls: tuple[str, ...] = ()
    workflows_dir: Path = REPO_ROOT / "workflows"
    #: Uploads larger than this are refused before decoding.
    max_upload_bytes: int = 20 * 1024 * 1024
    #: Images with more pixels than this are refused (decompression-bomb guard).
    max_image_pixels: int = 36_000_000
    welcome_credits: int = 100
    signup_mode: str = "open"
    #: Wrong redeem-code guesses allowed per user per window.
    redeem_max_failures: int = 5
    redeem_window_seconds: int = 900
    #: Bearer token for ``GET /metrics`` from other hosts; empty: metrics on loopback only.
    metrics_token: str = ""
    #: Mark the session cookie ``Secure`` (sent over HTTPS only). It is marked anyway on
    #: requests that arrived over HTTPS; set this when a TLS proxy is not in
    #: ``trusted_proxies``.
    secure_cookies: bool = False
    #: Addresses or networks (CIDR) of the reverse proxies in front of the studio; only
    #: their ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed. Empty: none.
    trusted_proxies: tuple[str, ...] = ()
    #: Failed sign-ins one client address (an IPv6 /64) may make per 15 minutes, over
    #: all names; then it is refused until the window ends.
    login_failures_per_address: int = 50
    #: After a name's first wrong passwords from one address, the wait before its next
    #: attempt from there; it doubles with each further failure (at most 5 minutes).
    login_backoff_seconds: float = 1.0
    #: Accounts one client address may create per hour.
    signups_per_address: int = 5
    #: Seconds the jobs of a node whose agent went silent wait for it to come back (its
    #: ComfyUI may still run them) before they are requeued or failed (docs/agent.md).
    agent_lost_seconds: int = 120
    #: Where uploads and outputs are kept: ``local`` (``data_dir/assets``, maybe a shared
    #: mount) or ``s3`` (an S3-compatible bucket, settings ``s3_*``; docs/deploy.md).
    asset_store: str = "local"
    #: The S3 API's URL (MinIO, Ceph RGW, OSS, R2); empty: AWS S3 of ``s3_region``.
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = ""
    #: Keys of the S3 user; empty: boto3's own chain (AWS_* variables, an instance role).
    #: Never logged, never shown by ``repr``.
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    #: ``http://host/bucket/key`` instead of ``http://bucket.host/key`` (MinIO, RGW).
    s3_path_style: bool = False
    #: Prepended to every object key (the key is otherwise the SHA-256 itself).
    s3_prefix: str = ""
    #: Put objects with the ``bucket-owner-full-control`` ACL, so the bucket's owner (the
    #: studio) can read what an agent's own credential wrote. Off for stores that reject
    #: ACL headers.
    s3_bucket_owner_acl: bool = True
    #: Lifetime of the presigned URLs handed to agents for a job's inputs.
    s3_presign_seconds: int = 3600
    #: Secret that signs webhook deliveries (``X-Studio-Signature``); empty: jobs cannot
    #: carry a ``webhook_url`` (docs/api.md).
    webhook_secret: str = ""
    #: Networks (CIDR) a webhook may reach although they are private, loopback or
    #: link-local; everything else private is refused. Empty: public addresses only.
    webhook_allow_networks: tuple[str, ...] = ()
    #: The wait before a failed delivery's second attempt; it doubles each time, and
    #: delivery is given up ``webhook_give_up_seconds`` after the job ended.
    webhook_retry_seconds: float = 30.0
    webhook_give_up_seconds: int = 86_400
    webhook_timeout_seconds: float = 10.0
    #: Per-user limits, a default per role: these for creators, the ``admin_`` ones for
    #: administrators; either is overridden per user on the admin page, the admin API or
    #: with ``python -m backend limits``. 0 means no limit (backend/jobs/limits.py).
    max_waiting_jobs: int = 0
    max_running_jobs: int = 0
    submits_per_minute: int = 0
    daily_spend_cap: int = 0
    storage_quota_mb: int = 0
    admin_max_waiting_jobs: int = 0
    admin_max_running_jobs: int = 0
    admin_submits_per_minute: int = 0
    admin_daily_spend_cap: int = 0
    admin_storage_quota_mb: int = 0

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, config_file: str | Path | None = None) -> "Settings":
        """Build settings from a TOML file and ``STUDIO_*`` variables of ``env``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        path = config_file or env.get("STUDIO_CONFIG")
        if path:
            try:
                with open(path, "rb") as fh:
                    values.update(tomllib.load(fh))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"Cannot read config file {path}: {exc}") from None
        for f in fields(cls):
            key = "STUDIO_" + f.name.upper()
            if key in env:
                values[f.name] = env[key]
        return cls().with_values(values)

    def with_values(self, values: Mapping[str, object]) -> "Settings":
        """A copy with ``values`` (strings or TOML values) converted and validated."""
        known = {f.name: f for f in fields(self)}
        converted: dict[str, object] = {}
        for name, raw in values.items():
            if name not in known:
                raise ConfigError(f"Unknown setting {name!r}; known settings: {', '.join(sorted(known))}")
            converted[name] = _convert(name, getattr(self, name), raw)
        result = replace(self, **converted)  # type: ignore[arg-type]  # each value was converted to its field's type
        result._validate()
        return result

    def _validate(self) -> None:
        if self.signup_mode not in SIGNUP_MODES:
            raise ConfigError(f"signup_mode must be one of {', '.join(SIGNUP_MODES)}, not {self.signup_mode!r}")
        for name in ("max_upload_bytes", "max_image_pixels", "redeem_max_failures", "redeem_window_seconds",
                     "login_failures_per_address", "signups_per_address", "login_backoff_seconds",
                     "agent_lost_seconds", "s3_presign_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("webhook_retry_seconds", "webhook_give_up_seconds", "webhook_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in [prefix + limit for prefix in ("", "admin_") for limit in LIMITS]:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative (0: no limit)")
        for network in self.webhook_allow_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"webhook_allow_networks: {network!r} is not an IP network (like 10.0.0.0/8)") from None
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies: {proxy!r} is not an IP address or network "
                                  "(like 127.0.0.1 or 10.0.0.0/8)") from None
        if self.asset_store not in ASSET_STORES:
            raise ConfigError(f"asset_store must be one of {', '.join(ASSET_STORES)}, not {self.asset_store!r}")
        if self.asset_store == "s3" and not self.s3_bucket:
            raise ConfigError("asset_store = 's3' needs s3_bucket (and s3_endpoint unless the bucket is on AWS)")
        if self.welcome_credits < 0:
            raise ConfigError("welcome_credits must not be negative")


def _convert(name: str, current: object, raw: object) -> object:
    try:
        if isinstance(current, bool):
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(raw)  # type: ignore[call-overload]
        if isinstance(current, float):
            return float(raw)  # type: ignore[arg-type]
        if isinstance(current, Path):
            return Path(str(raw))
        if isinstance(current, tuple):
            items = raw if isinstance(raw, list) else str(raw).replace(",", " ").split()
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"Setting {name!r} has an invalid value {raw!r}") from None
