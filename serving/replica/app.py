"""The replica's HTTP API: a Starlette application (ASGI, under uvicorn: serving.replica.server)
over a ModelCache.

Every request must be signed with the replica's token (serving.signing) over its raw path and body,
checked before anything else (an unsigned request learns nothing, not even which paths exist);
`/metrics` also takes `Authorization: Bearer <metrics_token>` when one is configured. The work
(status, cache, inference waiting on its batch) runs in Starlette's thread pool: it blocks. Errors
are JSON: `{"error": "<code>", "detail": "<sentence>", "field": "<field>"}` (field only when about
an input).

    GET  /v1/status         "state": "loading" (pinned models preloading), "ready" or "draining"
    POST /v1/models/<name>[:<version>]/predict   image/jpeg | image/png | application/json {"images": [b64...]}
    POST /v1/models/<name>[:<version>]/load      optional JSON {"pin": true}
    POST /v1/models/<name>[:<version>]/unload
    GET  /metrics
"""

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import re
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from urllib.parse import parse_qs

import anyio.to_thread
from PIL import Image, JpegImagePlugin, PngImagePlugin
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from serving import signing

from .errors import (
    BadImage, BadRequest, Draining, MethodNotAllowed, NotFound, ReplicaError, RequestTimeout, TooLarge, Unauthorized,
)

log = logging.getLogger("serving.replica")

VERSION = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only: str.isdigit() is true for '²'
REF = re.compile(r"(?P<name>[^:]+)(?::(?P<version>.*))?")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/jpg", "application/octet-stream")
MAX_IMAGES = 256
# Refuse decompression bombs: 50 megapixels is far beyond any image a detector is served.
MAX_PIXELS = 50_000_000
# A body over the limit but within this many times it is read and dropped before the 413.
DISCARD_FACTOR = 4
# A body still arriving after this long is a 408: the front door and the web send theirs at once.
BODY_SECONDS = 60
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def json_response(status, payload, headers=None):
    return Response(json.dumps(payload).encode(), status_code=status, media_type="application/json", headers=headers)


def error_response(error):
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return json_response(error.status, error.body(), headers)


class ReplicaApp:
    """`ReplicaApp(config, cache)`; `asgi()` is its HTTP application. `start_preload()` loads the
    pinned models in a background thread: meanwhile status says `"state": "loading"` and a request
    for a model being preloaded waits for that load (the cache's single flight). `start_draining()` makes new
    predict and load requests answer 503 `draining` while those in flight finish;
    `wait_idle(timeout)` returns once none is left (True) or the time is up (False)."""

    def __init__(self, config, cache):
        self.config = config
        self.cache = cache
        self.metrics = cache.metrics
        self.draining = False
        self.loading = False
        self._working = 0  # predict and load requests being served
        self._idle = threading.Condition()

    def start_preload(self):
        """Load the pinned models in a background thread (the server already answers); the
        returned thread ends when they are loaded or refused."""
        self.loading = True

        def preload():
            try:
                self.cache.preload()
            finally:
                self.loading = False
                log.info("replica %s ready: pinned models preloaded", self.config.replica)

        thread = threading.Thread(target=preload, name="preload", daemon=True)
        thread.start()
        return thread

    def start_draining(self):
        with self._idle:
            if not self.draining:
                log.info("replica %s draining: %d request(s) in flight", self.config.replica, self._working)
            self.draining = True

    def wait_idle(self, timeout):
        with self._idle:
            return self._idle.wait_for(lambda: self._working == 0, timeout)

    @contextmanager
    def _work(self, refusal):
        with self._idle:
            if self.draining:  # checked and counted at once, so a drain never misses a request
                raise Draining(refusal, retry_after=1)
            self._working += 1
        try:
            yield
        finally:
            with self._idle:
                self._working -= 1
                self._idle.notify_all()

    # -- HTTP ---------------------------------------------------------------------------------

    def asgi(self):
        """The Starlette application. Routes take every method, so that the signature is checked
        before a wrong method (405) or path (404) is answered, as for any other request."""
        route = partial(Route, methods=ALL_METHODS)
        return Starlette(
            routes=[
                route("/metrics", self._endpoint("metrics", self._metrics, method="GET", metrics=True)),
                route("/v1/status", self._endpoint("status", self._status, method="GET")),
                route("/v1/models/{ref}/predict", self._endpoint("predict", self._predict)),
                route("/v1/models/{ref}/load", self._endpoint("load", self._load)),
                route("/v1/models/{ref}/unload", self._endpoint("unload", self._unload)),
                route("/{path:path}", self._endpoint("other", self._unknown, method=None)),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app):
        # Each request waiting on its batch holds a thread: room for two full batches, with threads
        # to spare for status and metrics, so a busy replica still answers its health checks.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, 2 * self.config.max_batch + 8)
        self.start_preload()
        try:
            yield
        finally:
            self.cache.close()

    def _endpoint(self, name, handler, method="POST", metrics=False):
        """An endpoint: the body read within its limits, the signature checked, then `handler(request,
        body)` in the thread pool; a refusal is its JSON error, anything else a logged 500."""

        async def endpoint(request):
            started = time.monotonic()
            try:
                body = await self._body(request)
                self._authorise(request, body, metrics=metrics)
                if method is not None and request.method != method:
                    raise MethodNotAllowed(f"use {method} for {request.url.path}")
                response = await run_in_threadpool(handler, request, body)
            except ReplicaError as exc:
                response = error_response(exc)
            except ClientDisconnect:
                response = Response(status_code=499)  # nobody is left to read it
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                response = json_response(500, {"error": "internal", "detail": "the replica failed on this request"})
            self.metrics.request_seconds.labels(name, str(response.status_code)).observe(time.monotonic() - started)
            return response

        return endpoint

    async def _body(self, request):
        try:
            return await asyncio.wait_for(self._read_body(request), BODY_SECONDS)
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {BODY_SECONDS} s", field="images") from None

    async def _read_body(self, request):
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            if int(declared) <= DISCARD_FACTOR * limit:
                # Read it into the void so the kept-alive connection stays usable: answering
                # before the client has sent it all would break the client's next request.
                async for _ in request.stream():
                    pass
            raise TooLarge(f"the body is {declared} bytes; at most {limit} are accepted", field="images")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body is over {limit} bytes", field="images")
            chunks.append(chunk)
        return b"".join(chunks)

    def _authorise(self, request, body, metrics=False):
        if metrics and self.config.metrics_token:
            given = request.headers.get("authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {self.config.metrics_token}".encode()):
                return
        headers = {
            name: request.headers[name]
            for name in (signing.TIME_HEADER, signing.SIGNATURE_HEADER)
            if name in request.headers
        }
        if not signing.verify(self.config.token, request.method, _signed_path(request.scope), body, headers):
            raise Unauthorized(
                "this replica answers only requests signed with its token (X-Replica-Time and "
                "X-Replica-Signature, made within a minute)"
            )

    def _status(self, request, body):
        return json_response(200, self.status())

    def _metrics(self, request, body):
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    def _unknown(self, request, body):
        raise NotFound(f"no such endpoint: {request.url.path}")

    def _model(self, request):
        """(name, version) of the path's `name[:version]`."""
        ref = REF.fullmatch(request.path_params["ref"])
        if ref is None:
            raise NotFound(f"no such endpoint: {request.url.path}")
        return ref["name"], self._version(ref["version"])

    @staticmethod
    def _version(text):
        if text is None:
            return None
        if not VERSION.fullmatch(text):
            raise BadRequest(f"version must be a positive whole number, not {text!r}", field="version")
        return int(text)

    def _predict(self, request, body):
        name, version = self._model(request)
        query = parse_qs(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
        return self.predict(request.headers.get("content-type", ""), name, version, body, query)

    def _load(self, request, body):
        return self.load(*self._model(request), body)

    def _unload(self, request, body):
        return self.unload(*self._model(request))

    # -- endpoints ----------------------------------------------------------------------------

    def status(self):
        return {
            "replica": self.config.replica,
            "state": "draining" if self.draining else "loading" if self.loading else "ready",
            **self.cache.status(),
        }

    def predict(self, content_type, name, version, body, query):
        self.cache.resolve(name, version)  # an unknown model is a 404 before any image is read
        conf = self._conf(query)
        images = decode_images(content_type, body, self.config.max_request_pixels)
        with self._work("this replica is draining and takes no new requests; send it to another replica"):
            found = self.cache.predict(name, version, images, conf)
        results = [
            {"width": image.width, "height": image.height, "detections": detections}
            for image, detections in zip(images, found.pop("detections"))
        ]
        return json_response(200, {**found, "replica": self.config.replica, "results": results})

    @staticmethod
    def _conf(query):
        if "conf" not in query:
            return None
        text = query["conf"][-1]
        try:
            conf = float(text)
        except ValueError:
            raise BadRequest(f"conf must be a number between 0 and 1, not {text!r}", field="conf") from None
        if not 0 <= conf <= 1:
            raise BadRequest(f"conf must be between 0 and 1, not {conf}", field="conf")
        return conf

    def load(self, name, version, body):
        pin = False
        if body.strip():
            options = parse_json(body, partial(BadRequest, field="pin"), "the body must be JSON such as {\"pin\": true}")
            pin = options.get("pin", False) if isinstance(options, dict) else None
            if not isinstance(pin, bool):
                raise BadRequest("pin must be true or false", field="pin")
        with self._work("this replica is draining and loads no models"):
            lease = self.cache.load(name, version, pin=pin)
        return json_response(200, {**self._model_status(name, lease.spec.version), "cache": lease.cache,
                                   "load_ms": round(lease.load_ms, 2)})

    def unload(self, name, version):
        spec = self.cache.resolve(name, version)
        was_resident = self.cache.unload(name, version)
        return json_response(200, {**self._model_status(name, spec.version), "unloaded": was_resident})

    def _model_status(self, name, version):
        for model in self.cache.status()["models"]:
            if model["name"] == name and model["version"] == version:
                return model
        raise NotFound(f"model {name}:{version} vanished")


def _signed_path(scope):
    """The path and query exactly as the client sent them (what it signed), not as decoded."""
    query = scope["query_string"].decode("latin-1")
    path = scope["raw_path"].decode("latin-1")
    return f"{path}?{query}" if query else path


def parse_json(body, refusal, detail):
    """The JSON value in `body`, or `refusal(detail)` raised. The bodies taken here are a level or two
    deep; json's C parser checks Python's recursion limit at each level and raises RecursionError
    past it (about a thousand levels): a body nested that deep is the caller's bad request (400),
    never the replica's 500."""
    try:
        return json.loads(body)
    except ValueError:
        raise refusal(detail) from None
    except RecursionError:
        raise refusal(f"{detail} (this one is nested too deep)") from None


def decode_images(content_type, body, max_pixels=None):
    """PIL images (RGB, decoded) from a body: one image, or JSON {"images": [base64, ...]}.

    Every image's size is read from its header first (opening is lazy); when together they have
    more than `max_pixels` pixels the request is refused (TooLarge) before any is decoded. Then
    they are decoded one at a time."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        payload = parse_json(body, BadImage, "the body is not valid JSON; send {\"images\": [\"<base64>\", ...]}")
        encoded = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(encoded, list) or not encoded:
            raise BadImage("images must be a non-empty list of base64-encoded JPEG or PNG images")
        if len(encoded) > MAX_IMAGES:
            raise BadImage(f"at most {MAX_IMAGES} images per request, not {len(encoded)}")
        opened = []
        for index, text in enumerate(encoded):
            if not isinstance(text, str):
                raise BadImage(f"images[{index}] is not a base64 string")
            try:
                blob = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise BadImage(f"images[{index}] is not valid base64") from None
            opened.append((_open(blob, f"images[{index}]"), f"images[{index}]"))
    elif kind and kind not in IMAGE_TYPES:
        raise BadImage(f"Content-Type {kind!r} is not accepted: send image/jpeg, image/png or application/json")
    else:
        opened = [(_open(body, "the body"), "the body")]
    total = sum(image.width * image.height for image, _ in opened)
    if max_pixels is not None and total > max_pixels:
        raise TooLarge(
            f"the images have {total} pixels together; at most {max_pixels} are accepted in one request",
            field="images",
        )
    decoded = []
    while opened:  # one at a time, each undecoded original let go once its RGB copy is made
        image, what = opened.pop(0)
        decoded.append(_decode(image, what))
    return decoded


def _open(blob, what):
    """The image in `blob`, its header read but its pixels not decoded yet."""
    if not blob:
        raise BadImage(f"{what} is empty: send a JPEG or PNG image")
    # Only JPEG and PNG, opened by their own Pillow plugins: no other decoder sees the bytes, and
    # ultralytics' patched Image.open (which would try to install a HEIF plugin) is not involved.
    if blob.startswith(b"\xff\xd8\xff"):
        plugin = JpegImagePlugin.JpegImageFile
    elif blob.startswith(b"\x89PNG\r\n\x1a\n"):
        plugin = PngImagePlugin.PngImageFile
    else:
        raise BadImage(f"{what} is not a JPEG or PNG image")
    try:
        image = plugin(io.BytesIO(blob))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise BadImage(f"{what} is not a decodable JPEG or PNG image") from None
    if image.width * image.height > MAX_PIXELS:
        raise TooLarge(f"{what} is {image.width}x{image.height}, over {MAX_PIXELS} pixels", field="images")
    return image


def _decode(image, what):
    try:
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        raise BadImage(f"{what} is not a decodable JPEG or PNG image") from None
    finally:
        image.close()
