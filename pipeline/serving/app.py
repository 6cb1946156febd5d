"""The Ray Serve application: one deployment of detector replicas behind a FastAPI ingress.

    POST /predict?score_threshold=0.3&max_detections=100   the image as the body, or multipart field `image`
    GET  /model      the version serving, its classes, input size, metrics; the alias followed and its state
    GET  /healthz    200 once a version is loaded
    POST /model/refresh   read the alias now (this replica; the others at their interval)

Concurrent requests on a replica share model calls (`@serve.batch`): each request is decoded and cut into model
passes in a worker thread (never on the event loop), the batch runs in another thread, so the loop keeps taking
requests while the network runs. A large image sliced into more windows than a model call holds streams through
its own calls instead (a batch of windows at a time in memory). The response schema is `pipeline.serving.responses`.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) as objects

import asyncio
import logging
import threading
import time
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from pipeline.registry.predict import Pass
from pipeline.serving.follow import ModelFollower, Served, registry_loader
from pipeline.serving.options import ServeOptions
from pipeline.serving.requests import RequestRefused, check_body_size, decode, form_image, image_bytes, parse_params
from pipeline.serving.responses import prediction_response

logger = logging.getLogger("ray.serve")
api = FastAPI(title="EfficientDet", description="Object detection with a registered EfficientDet version")


@serve.deployment
@serve.ingress(api)
class DetectorServer:
    def __init__(self, options: dict[str, Any]):
        self.options = ServeOptions.from_dict(options)
        o = self.options
        backend = None if o.backend == "auto" else o.backend
        threads = max(1, int(o.cpus_per_replica))
        load = registry_loader(o.tracking_uri, backend, threads, o.use_gpu, o.slice, o.max_batch_size)
        self.follower = ModelFollower(o.tracking_uri, o.model, load, log=logger.warning)
        self.infer.set_max_batch_size(o.max_batch_size)
        self.infer.set_batch_wait_timeout_s(o.batch_wait_ms / 1000)
        self.calls = 0  # batches run (requests sharing a model call; a streamed large image is one), GET /model
        self._wake, self._stop = threading.Event(), threading.Event()
        threading.Thread(target=self._follow, name="alias-follower", daemon=True).start()

    def _follow(self) -> None:
        """Reads the alias every follow_interval_s, in its own thread: a load never blocks a request."""
        while not self._stop.is_set():
            self._wake.wait(self.options.follow_interval_s)
            self._wake.clear()
            try:
                self.follower.check()
            except Exception:  # never let the follower die: the next interval tries again
                logger.error("serve: alias check failed:\n%s", traceback.format_exc())

    def __del__(self) -> None:
        self._stop.set()
        self._wake.set()

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        o = self.options
        try:
            served = self.follower.current
            params = parse_params(dict(request.query_params))
            check_body_size(request.headers.get("content-length"), o.max_body_bytes)
            data = await self._image_bytes(request)
            array = await asyncio.to_thread(decode, data, o.max_image_pixels)
            decoded_ms = 1000 * (time.perf_counter() - start)
            prediction, batch = await self._predict(served, array)
        except RequestRefused as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except Exception as e:  # a bug or a broken model: answered, logged, the replica keeps serving
            logger.error("serve: /predict failed:\n%s", traceback.format_exc())
            return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)
        body = prediction_response(served, self.follower.alias, array.shape, prediction, params, batch)
        body["time_ms"] = {"total": 1000 * (time.perf_counter() - start), "decode": decoded_ms}
        return JSONResponse(body)

    async def _predict(self, served: Served, array) -> tuple[dict, int]:
        """(merged prediction, requests in its model call). An image of many windows fills whole model calls by
        itself: it streams through them a batch of windows at a time (memory bounded on huge images), unbatched."""
        detector = served.detector
        if detector.pass_count(*array.shape[:2]) > detector.batch_size:
            self.calls += 1
            return (await asyncio.to_thread(detector.predict_arrays, [array], [1]))[0], 1
        passes = await asyncio.to_thread(lambda: list(detector.passes([array], [1])))
        return await self.infer(served, passes)

    async def _image_bytes(self, request: Request) -> bytes:
        limit = self.options.max_body_bytes
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form_image(form)
            if upload is None:
                raise RequestRefused(400, f"multipart request without an 'image' field; fields: {sorted(form)}")
            data = await upload.read() if hasattr(upload, "read") else str(upload).encode()
            return image_bytes(data, limit)
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked upload has no Content-Length: count while reading
            size += len(chunk)
            if size > limit:
                raise RequestRefused(413, f"request body past the limit of {limit:,} bytes")
            chunks.append(chunk)
        return image_bytes(b"".join(chunks), limit)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def infer(self, served: list[Served], passes: list[list[Pass]]) -> list[tuple[dict, int]]:
        """Several requests' passes through one model call per version (a batch straddling an alias move holds
        two): [(the request's merged prediction, requests in its call)]."""
        self.calls += 1
        answers: list[tuple[dict, int] | None] = [None] * len(passes)
        for version in {s.version for s in served}:
            members = [i for i, s in enumerate(served) if s.version == version]
            detector = served[members[0]].detector
            flat = [p for i in members for p in passes[i]]
            predictions = await asyncio.to_thread(detector.run_passes, flat)
            offset = 0
            for i in members:
                count = len(passes[i])
                answers[i] = (detector.merge(predictions[offset : offset + count])[0], len(members))
                offset += count
        return answers  # type: ignore[return-value]

    @api.get("/model")
    async def model(self) -> dict[str, Any]:
        f = self.follower
        return {
            **f.current.describe(),
            "alias": f.alias,
            "follow_interval_s": self.options.follow_interval_s if f.alias else None,
            "last_check": f.last_check,
            "not_served": f.failed,
            "batches": self.calls,
        }

    @api.post("/model/refresh")
    async def refresh(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.follower.check, True)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "name": self.follower.name, "version": self.follower.current.version}


def build_app(options: ServeOptions) -> serve.Application:
    return DetectorServer.options(**options.deployment_options()).bind(options.to_dict())


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The Serve config file's `import_path` (`serve deploy FILE`): the application's `args` are ServeOptions."""
    return build_app(ServeOptions.from_dict(dict(args)))
