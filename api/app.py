"""The app factory and its lifespan: the composition root.

Nothing is built at import time; ``create_app`` wires settings into clients
when the server starts, and routes get them through ``api.deps``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from segmentation import (
    ClipEngine,
    EngineConfig,
    OnnxModel,
    SegmentationModel,
    resolve_model,
)
from segmentation.decode import ImageLimits
from segmentation.passes import choose_passes

from .assets import start_assets
from .database import create_database, create_schema, session_factory
from .errors import install_error_handlers
from .live import start_live_sync
from .metering import start_billing
from .openapi import install_openapi
from .readiness import Readiness
from .middleware import (
    BodyLimitMiddleware,
    FaultMiddleware,
    HeaderLimitMiddleware,
    RateLimitHeadersMiddleware,
    RequestIdMiddleware,
)
from .routes import account, captures, clients, clip, docs, health, pairing, stripe_webhook
from .services import Services
from .warmup import WarmingEngine
from .settings import Settings

log = logging.getLogger("arclip")

# Multipart framing around the image: boundaries, headers and small form fields.
_MULTIPART_OVERHEAD = 64 * 1024


def build_model(settings: Settings) -> SegmentationModel:
    if settings.inference_url:
        from segmentation.remote import TritonModel

        # The preset (input size, normalisation) is the ARCLIP_MODEL's; the server runs its graph.
        return TritonModel(
            settings.inference_url,
            settings.inference_model,
            resolve_model(settings.model).preset,
            timeout_s=settings.inference_timeout_s,
            max_in_flight=settings.inference_max_in_flight,
            max_batch=settings.max_batch_size,
            start_timeout_s=settings.inference_start_timeout_s,
        )
    import onnxruntime

    from segmentation.session import choose_providers

    on_cpu = choose_providers(onnxruntime.get_available_providers(), settings.providers)[0] == "CPUExecutionProvider"
    # Measured: on a CPU a batch is no faster per image than single runs, so
    # batching (and its load-time proof, which costs memory) is for GPUs only.
    default_batch = 1 if on_cpu else 8
    return OnnxModel(
        resolve_model(settings.model),
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
        max_batch=settings.max_batch_size or default_batch,
        precision=settings.model_precision,
        # Derived graphs (int8) are rebuilt from the model file when missing: state, not config.
        derived_dir=settings.model_cache_dir or settings.data_dir / "models",
    )


def build_engine(settings: Settings, model: SegmentationModel | None = None) -> ClipEngine:
    """The clipping engine as ``arclip serve`` runs it (``model`` replaces the ONNX one)."""
    model = model or build_model(settings)
    return ClipEngine(model, engine_config(settings, model))


def engine_config(settings: Settings, model: SegmentationModel) -> EngineConfig:
    return EngineConfig(
        limits=ImageLimits(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
        ),
        concurrency=max(1, settings.workers),
        max_queue=max(1, settings.max_queue),
        max_batch=settings.max_batch_size,
        max_batch_wait=settings.max_batch_wait_ms / 1000.0,
        extra_passes=choose_passes(settings.extra_passes, model.provider, model.any_size),
        load_aware_passes=settings.load_aware_passes,
    )


def create_app(settings: Settings | None = None, *, model: SegmentationModel | None = None) -> FastAPI:
    """Build the app. ``model`` replaces the ONNX model (tests use an in-memory one)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = create_database(settings.resolved_database_url, busy_timeout_s=settings.database_busy_timeout_s)
        try:
            await create_schema(database, auto_migrate=settings.auto_migrate)
            sessions = session_factory(database)
            clipper = WarmingEngine()
            # The ONNX model loads while the server already answers (/readyz: "starting");
            # a model handed in is loaded already.
            await clipper.load(partial(build_engine, settings, model), background=model is None)
            live_sync = await start_live_sync(settings, sessions)
            asset_stack = start_assets(settings, sessions, clipper, live_sync.hub, live_sync.pairings)
            # A device whose missed messages were trimmed gets the pairing's clips in its resync.
            live_sync.live.add_snapshot_source("assets", asset_stack.assets.snapshot)
            billing_stack = start_billing(settings, sessions)
            readiness = Readiness(
                database=database,
                store=asset_stack.store,
                clipper=clipper,
                redis=live_sync.redis,
                min_free_bytes=settings.min_free_bytes,
                timeout_s=settings.readiness_timeout_s,
            )
            app.state.services = Services(
                settings=settings,
                database=database,
                sessions=sessions,
                keys=billing_stack.billing.keys,
                clipper=clipper,
                store=asset_stack.store,
                assets=asset_stack.assets,
                screens=asset_stack.screens,
                captures=asset_stack.captures,
                pairings=live_sync.pairings,
                hub=live_sync.hub,
                live=live_sync.live,
                billing=billing_stack.billing,
                readiness=readiness,
            )
            try:
                yield
            finally:
                await billing_stack.close()
                await live_sync.close()
                await asset_stack.close()
                await clipper.close()
        finally:
            await database.dispose()

    # /docs and /redoc come from routes.docs: served offline, not from a CDN.
    app = FastAPI(title="arclip", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(clip.router)
    app.include_router(pairing.router)
    app.include_router(captures.router)
    app.include_router(account.router)
    app.include_router(stripe_webhook.router)
    app.include_router(clients.router)
    app.include_router(docs.router)
    install_openapi(app)
    # Innermost: its fault answers still get rate-limit fields and the request id.
    app.add_middleware(FaultMiddleware)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, framing=_MULTIPART_OVERHEAD)
    app.add_middleware(HeaderLimitMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
