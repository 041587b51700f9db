"""Settings from the environment (``ARCLIP_`` prefix), read once by the app factory or CLI."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCLIP_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".arclip")
    database_url: str | None = None  # default: SQLite file in the data dir
    redis_url: str | None = None
    storage_url: str | None = None  # default: file:// data dir
    model: str = "u2netp"

    host: str = "127.0.0.1"
    port: int = 8000

    # Execution: "cuda", "cpu", or an explicit provider list; unset picks the best available.
    providers: str | None = None
    intra_op_threads: int | None = None
    max_batch_size: int | None = Field(default=None, description="unset: 8 on a GPU, 1 on a CPU")
    max_batch_wait_ms: float = 4.0
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, description="images processed at once")
    max_queue: int = 16

    max_upload_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_image_side: int = 16_384

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'arclip.db').resolve()}"
