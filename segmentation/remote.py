"""A model served by an inference server: NVIDIA Triton (the KServe v2 protocol) over gRPC or HTTP.

``TritonModel`` is one more ``SegmentationModel``: the engine keeps decoding, alpha
refinement and encoding on its own CPUs and sends only the model's input tensors,
as binary tensor data, through the official ``tritonclient`` (asyncio). Views that
share a size reach ``predict`` as one batch and go out as one request; the
server's dynamic batcher then batches across requests and API replicas.

At start-up the server's model metadata and config are checked against the
preset (``check_model``): a wrong or missing model is a ``ModelError`` naming
what differs. Afterwards every failure of the server (unreachable, model not
ready or unloaded, too slow, queue full) becomes ``InferenceUnavailable`` here,
at the adapter. Requests in flight are bounded (``max_in_flight``) and each has
a deadline, so a slow or hung server costs a bounded number of connections and
answers, at worst, late by the deadline.

The client runs on its own event loop in one thread: ``predict`` is called from
the batcher's worker threads, and the start-up check runs before the app's loop
serves anything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from .errors import InferenceUnavailable, ModelError
from .models import Preset
from .session import to_saliency

log = logging.getLogger("arclip.segmentation")

T = TypeVar("T")

# gRPC reconnects after a failure with exponential backoff, by default up to two
# minutes: a server that comes back would wait that long for traffic. Capped low.
_RECONNECT_BACKOFF_MS = 1000


@dataclass(frozen=True)
class Endpoint:
    """Where the server is: ``grpc://host:8001`` or ``http(s)://host:8000``."""

    protocol: str  # "grpc" or "http"
    address: str  # host:port
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("grpc", "grpcs", "http", "https") or not parts.hostname:
            raise ModelError(
                f"Inference URL {url!r} is not one of grpc://host:port or http://host:port (https://, grpcs:// with TLS)."
            )
        port = parts.port or (8001 if scheme.startswith("grpc") else 8000)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls("grpc" if scheme.startswith("grpc") else "http", f"{host}:{port}", scheme in ("grpcs", "https"))

    def __str__(self) -> str:
        return f"{self.protocol}{'s' if self.ssl else ''}://{self.address}"


def parse_model_ref(ref: str) -> tuple[str, str]:
    """``name[:version]`` -> (name, version); version "" is the server's choice (its latest)."""
    name, _, version = ref.strip().partition(":")
    if not name or (version and not version.isdigit()):
        raise ModelError(f"Inference model {ref!r} is not NAME or NAME:VERSION (a whole number).")
    return name, version


@dataclass(frozen=True)
class ModelInterface:
    """What the engine needs to know of the served model, read from its metadata and config."""

    input_name: str
    output_name: str
    max_batch: int  # 1 where the server does not batch (max_batch_size 0)
    any_size: bool  # height and width are free, not only the preset's square
    batched: bool  # the tensors carry the batch dimension (max_batch_size > 0)


def check_model(metadata: dict[str, Any], config: dict[str, Any], preset: Preset) -> ModelInterface:
    """The served model's interface, or a ModelError listing everything that does not fit ``preset``.

    ``metadata`` and ``config`` are the KServe v2 JSON forms (gRPC answers converted
    with ``as_json``; integers may be strings there).
    """
    problems: list[str] = []
    max_batch_size = int(config.get("max_batch_size", 0) or 0)
    batched = max_batch_size > 0
    side = preset.input_size
    inputs, outputs = metadata.get("inputs") or [], metadata.get("outputs") or []
    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs, expected one image input")
    if not outputs:
        problems.append("no outputs")
    any_size = True

    def dims_of(tensor: dict[str, Any], rank: tuple[int, ...]) -> list[int] | None:
        shape = [int(d) for d in tensor.get("shape", [])]
        if batched:
            shape = shape[1:]  # the metadata's shape leads with -1 for the batch
        elif shape and shape[0] in (1, -1):
            shape = shape[1:]  # no server-side batching: one image per request
        if len(shape) not in rank:
            problems.append(f"{tensor.get('name')!r} has shape {tensor.get('shape')}, expected {_expected(rank, side)}")
            return None
        return shape

    def check_size(name: str, dims: list[int]) -> None:
        nonlocal any_size
        for dim in dims:
            if dim not in (-1, side):
                problems.append(f"{name!r} has size {dims}, expected {side}x{side} or dynamic (-1)")
                return
        any_size &= all(dim == -1 for dim in dims)

    for tensor, channels, rank in ((inputs[0] if inputs else None, 3, (3,)), (outputs[0] if outputs else None, 1, (2, 3))):
        if tensor is None:
            continue
        name = tensor.get("name")
        if tensor.get("datatype") != "FP32":
            problems.append(f"{name!r} has datatype {tensor.get('datatype')}, expected FP32")
        dims = dims_of(tensor, rank)
        if dims is None:
            continue
        if len(dims) == 3 and dims[0] not in (channels, -1):
            problems.append(f"{name!r} has {dims[0]} channels, expected {channels}")
        check_size(name, dims[-2:])
    if problems:
        raise ModelError("; ".join(problems))
    return ModelInterface(
        input_name=inputs[0]["name"],
        output_name=outputs[0]["name"],
        max_batch=max(1, max_batch_size),
        any_size=any_size,
        batched=batched,
    )


def _expected(rank: tuple[int, ...], side: int) -> str:
    return f"[batch, 3, {side}, {side}]" if rank == (3,) else f"[batch, 1, {side}, {side}]"


def unavailable(exc: BaseException, what: str) -> InferenceUnavailable:
    """The vendor's failure as ours, with a Retry-After that suits it."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceUnavailable):
        return exc
    if isinstance(exc, TimeoutError):
        return InferenceUnavailable(f"The inference server did not answer {what} in time; retry shortly.", 2)
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = (exc.message() or "").splitlines()[0][:200] if exc.message() else ""
        if "RESOURCE_EXHAUSTED" in status or "queue" in message.lower():
            return InferenceUnavailable(f"The inference server's queue is full; retry shortly ({message}).", 1)
        if "DEADLINE_EXCEEDED" in status:
            return InferenceUnavailable(f"The inference server did not answer {what} in time; retry shortly.", 2)
        return InferenceUnavailable(f"The inference server cannot answer {what} now: {message or status}.", 5)
    return InferenceUnavailable(f"The inference server cannot be reached for {what}: {exc.__class__.__name__}.", 5)


class _Client:
    """The one place that knows tritonclient's gRPC and HTTP flavours apart; every call is async."""

    def __init__(self, endpoint: Endpoint, timeout_s: float, max_in_flight: int) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        if endpoint.protocol == "grpc":
            import tritonclient.grpc as grpcclient
            import tritonclient.grpc.aio as grpc_aio

            self._types = grpcclient
            options = [
                ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                # Keepalive pings find a dead connection that no failed call has revealed yet.
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
                ("grpc.min_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
                ("grpc.max_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
            ]
            self._client: Any = grpc_aio.InferenceServerClient(endpoint.address, ssl=endpoint.ssl, channel_args=options)
        else:
            import tritonclient.http as httpclient
            import tritonclient.http.aio as http_aio

            self._types = httpclient
            self._client = http_aio.InferenceServerClient(
                endpoint.address, conn_limit=max_in_flight, conn_timeout=timeout_s, ssl=endpoint.ssl
            )

    @property
    def _grpc(self) -> bool:
        return self.endpoint.protocol == "grpc"

    async def server_metadata(self) -> dict[str, Any]:
        if self._grpc:
            return await self._client.get_server_metadata(as_json=True, client_timeout=self.timeout_s)
        return await self._client.get_server_metadata()

    async def model_ready(self, name: str, version: str) -> bool:
        if self._grpc:
            return await self._client.is_model_ready(name, version, client_timeout=self.timeout_s)
        return await self._client.is_model_ready(name, version)

    async def model_metadata(self, name: str, version: str) -> dict[str, Any]:
        if self._grpc:
            return await self._client.get_model_metadata(name, version, as_json=True, client_timeout=self.timeout_s)
        return await self._client.get_model_metadata(name, version)

    async def model_config(self, name: str, version: str) -> dict[str, Any]:
        if self._grpc:
            answer = await self._client.get_model_config(name, version, as_json=True, client_timeout=self.timeout_s)
            return answer.get("config", answer)
        return await self._client.get_model_config(name, version)

    async def infer(self, name: str, version: str, input_name: str, output_name: str, batch: np.ndarray) -> np.ndarray:
        tensor = self._types.InferInput(input_name, list(batch.shape), "FP32")
        if self._grpc:  # gRPC always carries raw bytes
            tensor.set_data_from_numpy(batch)
            wanted = self._types.InferRequestedOutput(output_name)
            result = await self._client.infer(
                name, [tensor], version, outputs=[wanted], client_timeout=self.timeout_s
            )
        else:  # HTTP: binary tensor extension, never JSON lists
            tensor.set_data_from_numpy(batch, binary_data=True)
            wanted = self._types.InferRequestedOutput(output_name, binary_data=True)
            result = await self._client.infer(name, [tensor], version, outputs=[wanted])
        out = result.as_numpy(output_name)
        if out is None:
            raise InferenceUnavailable(f"The inference server's answer has no output {output_name!r}.", 5)
        return out

    async def close(self) -> None:
        await self._client.close()


class _LoopThread:
    """An event loop of its own, in a daemon thread: the client lives and runs there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="arclip-triton", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


class TritonModel:
    """The model on a Triton (or any KServe v2) server."""

    provider = "triton"
    precision = "server"

    def __init__(
        self,
        url: str,
        model: str,
        preset: Preset,
        *,
        timeout_s: float = 10.0,
        max_in_flight: int = 8,
        max_batch: int | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        """Connect and check the served model; ModelError when it is missing, not ready in
        ``start_timeout_s``, or does not fit ``preset``.

        ``max_batch`` caps the server's own ``max_batch_size`` for one request.
        """
        self.endpoint = Endpoint.parse(url)
        self.name, self.version = parse_model_ref(model)
        self.preset = preset
        self.timeout_s = timeout_s
        # The batcher keeps this many runs in flight; the semaphore holds every caller to it.
        self.lanes = max(1, max_in_flight)
        self._loop = _LoopThread()
        self._client = self._await(self._make_client(), None)
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._client)
        try:
            self.interface, self.server = self._await(self._start(start_timeout_s), start_timeout_s + timeout_s)
        except BaseException:
            self.close()
            raise
        self.max_batch = min(self.interface.max_batch, max_batch or self.interface.max_batch)
        self.any_size = self.interface.any_size
        log.info(
            "model %s%s on %s (%s %s), max batch %d, %d requests in flight%s",
            self.name, f" v{self.version}" if self.version else "", self.endpoint,
            self.server.get("name", "server"), self.server.get("version", ""), self.max_batch, self.lanes,
            "" if self.any_size else ", square inputs only",
        )

    async def _make_client(self) -> _Client:
        self._in_flight = asyncio.Semaphore(self.lanes)
        return _Client(self.endpoint, self.timeout_s, self.lanes)

    def _await(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        try:
            return self._loop.submit(coro).result(timeout)
        except concurrent.futures.TimeoutError as exc:
            raise InferenceUnavailable("The inference server did not answer in time; retry shortly.", 2) from exc

    async def _start(self, start_timeout_s: float) -> tuple[ModelInterface, dict[str, Any]]:
        """Wait for the server and the model to be ready (bounded), then check the model's interface."""
        where = f"{self.name!r}{f' version {self.version}' if self.version else ''} on {self.endpoint}"
        deadline = asyncio.get_running_loop().time() + start_timeout_s
        last = "no answer"
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    if await self._client.model_ready(self.name, self.version):
                        server = await self._client.server_metadata()
                        metadata = await self._client.model_metadata(self.name, self.version)
                        config = await self._client.model_config(self.name, self.version)
                        break
                    last = "the model is not ready"
            except Exception as exc:
                last = unavailable(exc, "its model").detail
            if asyncio.get_running_loop().time() >= deadline:
                raise ModelError(f"Inference model {where} is not available ({last}); is it in the model repository?")
            await asyncio.sleep(0.25)
        try:
            interface = check_model(metadata, config, self.preset)
        except ModelError as exc:
            raise ModelError(
                f"Inference model {where} does not fit the {self.preset.family} preset: {exc.detail}"
            ) from None
        versions = metadata.get("versions") or []
        self.version_served = self.version or (max(versions, key=int) if versions else "")
        return interface, server

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) -> (N, H, W), one request per ``max_batch`` images; InferenceUnavailable on failure."""
        parts = [batch[i : i + self.max_batch] for i in range(0, len(batch), self.max_batch)]
        # The deadline is enforced on the client's loop; the extra second only guards against a stuck loop.
        outputs = [self._await(self._infer(part), self.timeout_s + 1) for part in parts]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    async def _infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.interface.batched and len(batch) > 1:
            return np.concatenate([await self._infer(batch[i : i + 1]) for i in range(len(batch))])
        sent = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.interface.batched:
            sent = sent[0]
        try:
            # Waiting for a free slot counts against the deadline too.
            async with asyncio.timeout(self.timeout_s), self._in_flight:
                out = await self._client.infer(
                    self.name, self.version, self.interface.input_name, self.interface.output_name, sent
                )
        except Exception as exc:
            raise unavailable(exc, "an inference") from exc
        if not self.interface.batched:
            out = out[None]
        if out.shape[0] != len(batch) or out.shape[-2:] != batch.shape[-2:] or out.size != len(batch) * batch[0, 0].size:
            raise InferenceUnavailable(
                f"The inference server answered shape {list(out.shape)} for input {list(batch.shape)}: "
                "has its model changed?", 5,
            )
        return to_saliency(out, self.preset)

    async def describe(self) -> dict[str, Any]:
        """Server, model, version and readiness, for /readyz; InferenceUnavailable when not ready."""
        return await asyncio.wrap_future(self._loop.submit(self._describe()))

    async def _describe(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                ready = await self._client.model_ready(self.name, self.version)
        except Exception as exc:
            raise unavailable(exc, "a readiness check") from exc
        if not ready:
            raise InferenceUnavailable(f"Inference model {self.name!r} is not ready on {self.endpoint}.", 5)
        return {
            "location": "remote",
            "server": str(self.endpoint),
            "server_version": f"{self.server.get('name', '')} {self.server.get('version', '')}".strip(),
            "model": self.name,
            "version": self.version_served,
            "ready": True,
        }

    def close(self) -> None:
        self._finalizer()


def _shutdown(loop: _LoopThread, client: _Client) -> None:
    """Close the client on its loop, then stop the loop (also when the model is garbage-collected)."""
    if loop.loop.is_running():
        try:
            loop.submit(client.close()).result(5)
        except Exception:  # closing a client whose server is gone must not fail shutdown
            pass
    loop.stop()
