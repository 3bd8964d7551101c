"""The replica's HTTP API: a plain WSGI application (no framework) over a ModelCache.

Every request must be signed with the replica's token (serving.signing); `/metrics` also takes
`Authorization: Bearer <metrics_token>` when one is configured. Errors are JSON:
`{"error": "<code>", "detail": "<sentence>", "field": "<field>"}` (field only when about an input).

    GET  /v1/status         "state": "loading" (pinned models preloading), "ready" or "draining"
    POST /v1/models/<name>[:<version>]/predict   image/jpeg | image/png | application/json {"images": [b64...]}
    POST /v1/models/<name>[:<version>]/load      optional JSON {"pin": true}
    POST /v1/models/<name>[:<version>]/unload
    GET  /metrics
"""

import base64
import binascii
import hmac
import io
import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from functools import partial
from urllib.parse import parse_qs, quote

from PIL import Image, JpegImagePlugin, PngImagePlugin

from serving import signing

from .errors import (
    BadImage, BadRequest, Draining, MethodNotAllowed, NotFound, ReplicaError, TooLarge, Unauthorized,
)

log = logging.getLogger("serving.replica")

VERSION = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only: str.isdigit() is true for '²'
MODEL_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?::(?P<version>[^/]+))?/(?P<action>predict|load|unload)$")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/jpg", "application/octet-stream")
MAX_IMAGES = 256
# Refuse decompression bombs: 50 megapixels is far beyond any image a detector is served.
MAX_PIXELS = 50_000_000
# A body over the limit but within this many times it is read and dropped before the 413.
DISCARD_FACTOR = 4

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity", 500: "Internal Server Error",
    503: "Service Unavailable",
}


class Response:
    def __init__(self, status, body, content_type="application/json", headers=None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_response(status, payload, headers=None):
    return Response(status, json.dumps(payload).encode(), headers=headers)


def error_response(error):
    headers = [("Retry-After", str(error.retry_after))] if error.retry_after else []
    return json_response(error.status, error.body(), headers)


class ReplicaApp:
    """`ReplicaApp(config, cache)` is the WSGI callable. `start_preload()` loads the pinned models
    in a background thread: meanwhile status says `"state": "loading"` and a request for a model
    being preloaded waits for that load (the cache's single flight). `start_draining()` makes new
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

    def __call__(self, environ, start_response):
        started = time.monotonic()
        endpoint = "other"
        try:
            endpoint, response = self.dispatch(environ)
        except ReplicaError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unexpected error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            response = json_response(500, {"error": "internal", "detail": "the replica failed on this request"})
        self.metrics.request_seconds.labels(endpoint, str(response.status)).observe(time.monotonic() - started)
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
        start_response(f"{response.status} {REASONS.get(response.status, 'Error')}", headers + response.headers)
        return [response.body]

    # -- routing ------------------------------------------------------------------------------

    def dispatch(self, environ):
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        body = self._read_body(environ)
        if path == "/metrics":
            self._authorise(environ, method, body, metrics=True)
            if method != "GET":
                raise MethodNotAllowed("use GET for /metrics")
            return "metrics", Response(200, self.metrics.render(), content_type=self.metrics.content_type)
        self._authorise(environ, method, body)
        if path == "/v1/status":
            if method != "GET":
                raise MethodNotAllowed("use GET for /v1/status")
            return "status", json_response(200, self.status())
        match = MODEL_ROUTE.match(path)
        if not match:
            raise NotFound(f"no such endpoint: {path}")
        action = match["action"]
        if method != "POST":
            raise MethodNotAllowed(f"use POST for {action}")
        name, version = match["name"], self._version(match["version"])
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if action == "predict":
            return action, self.predict(environ, name, version, body, query)
        if action == "load":
            return action, self.load(name, version, body)
        return action, self.unload(name, version)

    @staticmethod
    def _version(text):
        if text is None:
            return None
        if not VERSION.fullmatch(text):
            raise BadRequest(f"version must be a positive whole number, not {text!r}", field="version")
        return int(text)

    def _read_body(self, environ):
        limit = self.config.max_body_bytes
        length = environ.get("CONTENT_LENGTH") or ""
        if length:
            try:
                declared = int(length)
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if declared > limit:
                if declared <= DISCARD_FACTOR * limit:
                    # Read it into the void so the kept-alive connection stays usable: answering
                    # before the client has sent it all would break the client's next request.
                    _discard(environ["wsgi.input"], declared)
                raise TooLarge(f"the body is {declared} bytes; at most {limit} are accepted", field="images")
        stream = environ["wsgi.input"]
        body = stream.read(limit + 1) if not length else stream.read(int(length))
        if len(body) > limit:
            raise TooLarge(f"the body is over {limit} bytes", field="images")
        return body

    def _authorise(self, environ, method, body, metrics=False):
        if metrics and self.config.metrics_token:
            given = environ.get("HTTP_AUTHORIZATION", "")
            if hmac.compare_digest(given.encode(), f"Bearer {self.config.metrics_token}".encode()):
                return
        headers = {
            signing.TIME_HEADER: environ.get("HTTP_X_REPLICA_TIME"),
            signing.SIGNATURE_HEADER: environ.get("HTTP_X_REPLICA_SIGNATURE"),
        }
        headers = {key: value for key, value in headers.items() if value is not None}
        if not signing.verify(self.config.token, method, self._signed_path(environ), body, headers):
            raise Unauthorized(
                "this replica answers only requests signed with its token (X-Replica-Time and "
                "X-Replica-Signature, made within a minute)"
            )

    @staticmethod
    def _signed_path(environ):
        # The path as the client sent it: gunicorn keeps it in RAW_URI; other servers rebuild it.
        raw = environ.get("RAW_URI")
        if raw:
            return raw
        path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
        query = environ.get("QUERY_STRING")
        return f"{path}?{query}" if query else path

    # -- endpoints ----------------------------------------------------------------------------

    def status(self):
        return {
            "replica": self.config.replica,
            "state": "draining" if self.draining else "loading" if self.loading else "ready",
            **self.cache.status(),
        }

    def predict(self, environ, name, version, body, query):
        self.cache.resolve(name, version)  # an unknown model is a 404 before any image is read
        conf = self._conf(query)
        images = decode_images(environ.get("CONTENT_TYPE", ""), body, self.config.max_request_pixels)
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


def _discard(stream, length, chunk=1024 * 1024):
    while length > 0:
        data = stream.read(min(chunk, length))
        if not data:
            return
        length -= len(data)


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
