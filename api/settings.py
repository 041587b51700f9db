"""Settings from the environment (``ARCLIP_`` prefix), read once by the app factory or CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCLIP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".arclip"), description="where embedded state lives (database, files, keys, caches)")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL, postgresql+asyncpg://… in production; unset: a SQLite file in the data dir"
    )
    redis_url: str | None = Field(
        default=None, description="Redis for cross-replica hub fan-out and shared rate limits; unset: in-process"
    )
    storage_url: str | None = Field(
        default=None,
        description="file:///path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL); unset: files in the data dir",
    )
    model: str = Field(
        default="u2netp",
        description="u2netp, or a path to an .onnx file (isnet:/path.onnx, birefnet:/path.onnx name the preset)",
    )

    host: str = Field(default="127.0.0.1", description="where `arclip serve` listens (a phone on the LAN needs 0.0.0.0)")
    port: int = Field(default=8000, description="the port `arclip serve` listens on")

    # Execution: "cuda", "cpu", or an explicit provider list; unset picks the best available.
    providers: str | None = Field(
        default=None, description="cuda, tensorrt, cpu or an onnxruntime provider list; unset: the best available"
    )
    intra_op_threads: int | None = Field(default=None, description="onnxruntime threads per run; unset: adapted to load")
    model_precision: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        description="auto: int8 on a CPU for models with a tested int8 recipe (u2netp), fp32 elsewhere and on GPUs; "
        "the int8 graph is built once from the model file and cached under the data dir",
    )
    model_cache_dir: Path | None = Field(
        default=None, description="where derived model graphs (int8) are cached; unset: models/ in the data dir"
    )
    max_batch_size: int | None = Field(default=None, description="unset: 8 on a GPU, 1 on a CPU")
    max_batch_wait_ms: float = Field(default=4.0, description="how long a batch's first image waits for company")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, description="images processed at once; default: the CPU count")
    extra_passes: str = Field(
        default="auto",
        description='extra model runs per image for a better mask: "flip" (+1 run), "aspect" (+1, +2 with flip), '
        '"aspect-flip" (the other shape\'s mirror alone, +1), "zoom" (the crop around the object again), '
        '"flip-uncertain"/"aspect-uncertain"/"aspect-flip-uncertain" (only where the first map is unsure), '
        'comma-separated, "" for none; auto: flip,aspect on a GPU (they share batches), '
        'flip-uncertain,aspect-flip-uncertain on a CPU',
    )
    max_queue: int = Field(default=16, description="images admitted in all (running and waiting) before 503 overloaded")
    auto_migrate: bool = Field(
        default=False,
        description="PostgreSQL: a replica upgrades an older schema itself at start (under a lock); "
        "false: it refuses to start until `arclip db upgrade` ran. SQLite always upgrades itself",
    )
    database_busy_timeout_s: float = Field(
        default=5.0, ge=0, description="SQLite: how long a write waits for another writer's lock before a 503"
    )
    min_free_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0, description="/readyz fails when the database's or storage's disk has less room"
    )
    readiness_timeout_s: float = Field(default=2.0, gt=0, description="each /readyz probe's deadline")

    max_upload_bytes: int = Field(default=25 * 1024 * 1024, description="largest request body (25 MiB), refused before it is read")
    max_image_pixels: int = Field(default=50_000_000, description="largest image in pixels (50 MP), refused from its header")
    max_image_side: int = Field(default=16_384, description="longest image side in pixels")

    # Captures, assets and screen pictures (sync/assets).
    signing_key: SecretStr | None = Field(
        default=None, description="HMAC key of signed asset URLs; unset: generated once and kept in the data dir"
    )
    asset_retention_s: int = Field(default=24 * 3600, description="assets are deleted this long after capture")
    asset_url_ttl_s: int = Field(default=15 * 60, description="lifetime of a signed asset URL")
    retention_sweep_s: float = Field(default=300.0, description="how often expired assets are swept")
    public_url: str | None = Field(default=None, description="base of the URLs handed out; unset: the request's")
    locate_workers: int = Field(default=2, description="pastes located (or screen pictures indexed) at once")
    locate_max_queue: int = Field(default=16, description="pastes and screen pictures admitted before 503 overloaded")
    screen_cache_size: int = Field(default=32, description="screen picture indexes kept in memory")

    # Pairing and the live hub (sync/pairing, sync/hub). Pairing URLs use ``public_url``.
    pairing_code_length: int = Field(default=8, ge=6, le=16, description="characters in a pairing code")
    pairing_code_ttl_s: int = Field(default=300, ge=10, description="a pairing code lapses this long after it is issued")
    pairing_lifetime_s: int = Field(default=7 * 24 * 3600, description="an active pairing expires this long after its first claim")
    pairing_max_phones: int = Field(default=4, ge=1, description="phones one pairing holds (it holds one desktop)")
    pairing_claims_per_minute: int = Field(default=10, ge=1, description="claim attempts per client address")
    pairing_failed_claims_per_minute: int = Field(default=300, ge=1, description="wrong codes, all clients together")
    pairing_opens_per_minute: int = Field(default=30, ge=1, description="pairings opened per client address")
    hub_max_messages: int = Field(default=1000, ge=1, description="messages kept per pairing for resume")
    hub_retention_s: int = Field(default=7 * 24 * 3600, description="messages older than this are dropped")
    hub_heartbeat_s: float = Field(default=25.0, gt=0, description="app-level ping interval on /v1/sync")
    hub_idle_timeout_s: float = Field(default=60.0, gt=0, description="close a /v1/sync socket silent this long")
    sync_sweep_s: float = Field(default=60.0, gt=0, description="how often lapsed pairings and old messages are swept")
    hub_presence_grace_s: float = Field(
        default=5.0, ge=0, description="a device still counts as connected this long after its last socket closed"
    )

    # The paid API (billing/): plans, credits, rate limits, Stripe.
    plans: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='JSON overrides of the plans, e.g. {"free": {"monthly_credits": 100, "rate": 5}}'
    )
    credit_packs: dict[str, dict[str, Any]] | None = Field(
        default=None, description='JSON credit packs {"name": {"credits": 1000, "amount": 1000, "currency": "usd"}}; unset: the defaults'
    )
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60, description="an Idempotency-Key's response is replayed this long")
    reservation_ttl_s: int = Field(default=15 * 60, ge=30, description="credits reserved by a request that never finished come back after this")
    key_touch_interval_s: float = Field(default=60.0, ge=0, description="an API key's last_used_at is written at most this often")
    ratelimit_redis_timeout_s: float = Field(default=0.25, gt=0, description="a slower Redis is a failed one: each replica limits in process meanwhile")
    stripe_api_key: SecretStr | None = Field(default=None, description="unset: no Stripe (no checkout, usage kept for later)")
    stripe_webhook_secret: SecretStr | None = Field(default=None, description="whsec_… of the /v1/stripe/webhook endpoint")
    stripe_api_base: str | None = Field(default=None, description="another Stripe API address (a local test server)")
    stripe_payg_price: str | None = Field(default=None, description="the metered Price of the pay-as-you-go subscription")
    stripe_meter_event: str = Field(default="arclip_credits", description="the Billing Meter's event name")
    stripe_meter_unit: float = Field(default=0.25, gt=0, description="credits per meter unit (Stripe takes whole units)")
    stripe_timeout_s: float = Field(default=20.0, gt=0, description="deadline of each request to Stripe")
    stripe_max_retries: int = Field(default=2, ge=0, description="the SDK's own retries of a failed request")
    usage_report_interval_s: float = Field(default=5.0, gt=0, description="how often unreported usage is sent to Stripe")

    # A Triton / KServe v2 inference server that runs the model (segmentation/remote.py).
    inference_url: str | None = Field(
        default=None, description="grpc://host:8001 or http://host:8000; unset: the model runs in-process"
    )
    inference_model: str = Field(default="u2netp", description="the model's name on that server, NAME[:VERSION]")
    inference_timeout_s: float = Field(default=10.0, gt=0, description="deadline of each request to the server")
    inference_max_in_flight: int = Field(default=8, ge=1, description="requests to the server at once, per replica")
    inference_start_timeout_s: float = Field(
        default=30.0, ge=0, description="how long start-up waits for the server's model to be ready"
    )
    # Appended for issue 11 (segmentation.EngineConfig.load_aware_passes).
    load_aware_passes: bool = Field(
        default=True,
        description="quality=balanced runs its extra views only while the engine has a free place (under load: "
        "the base view; the X-Clip-Passes header says what ran); false: always. `arclip clip` always runs them",
    )

    @field_validator("extra_passes")
    @classmethod
    def _known_passes(cls, value: str) -> str:
        from segmentation.passes import parse_passes

        if value.strip().lower() == "auto":
            return "auto"
        return ",".join(parse_passes(value))  # a bad name fails at start-up, not per request

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'arclip.db').resolve()}"
