"""Signed requests between the platform and its inference replicas (pure Python, no Django).

A replica listens on the node's address, so every request to it carries an HMAC-SHA256 signature
made with the token the replica was started with. The signed message binds the method, the path
with its query string, the time and the body's SHA-256:

    METHOD \n /path?query \n unix-seconds \n sha256(body).hexdigest()

so a captured request cannot be replayed after `skew` seconds nor reused for another path or body.
The node supervisor, the tests, the benchmarks and the router all sign with `sign` (or the small
`ReplicaClient`); the replica checks with `verify`.
"""

import hashlib
import hmac
import json as jsonlib
import re
import time

import requests

TIME_HEADER = "X-Replica-Time"
SIGNATURE_HEADER = "X-Replica-Signature"
DEFAULT_SKEW = 60
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def _message(method, path, timestamp, body, digest=None):
    if digest is None:
        digest = hashlib.sha256(body or b"").hexdigest()
    return f"{method.upper()}\n{path}\n{timestamp}\n{digest}".encode()


def _mac(token, method, path, timestamp, body, digest=None):
    return hmac.new(token.encode(), _message(method, path, timestamp, body, digest), hashlib.sha256).hexdigest()


def sign(token, method, path, body=b"", now=None, digest=None):
    """The headers that sign one request: `path` is the path with its query string, exactly as sent.
    `digest`: the body's SHA-256 (hex) when the caller has it already (the router hashes a large
    body once, off its event loop, and signs each attempt with it); the body is not read then."""
    timestamp = int(time.time() if now is None else now)
    return {TIME_HEADER: str(timestamp), SIGNATURE_HEADER: _mac(token, method, path, timestamp, body, digest)}


def _header(headers, name):
    # Accept a plain dict in either spelling as well as case-insensitive mappings (requests, WSGI).
    for key in (name, name.lower(), name.upper()):
        if key in headers:
            return headers[key]
    return None


def verify(token, method, path, body, headers, now=None, skew=DEFAULT_SKEW):
    """True when `headers` sign this exact request with `token`, made within `skew` seconds of now
    (either way: a clock ahead is as suspect as one behind)."""
    if not token:
        return False
    stamp, signature = _header(headers, TIME_HEADER), _header(headers, SIGNATURE_HEADER)
    if not stamp or not signature:
        return False
    # A header is client input: anything but 64 lower-case hex digits (what `sign` makes) is
    # refused before compare_digest, which raises TypeError on a non-ASCII str.
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > skew:
        return False
    expected = _mac(token, method, path, timestamp, body)
    return hmac.compare_digest(expected, signature)


class ReplicaClient:
    """Signed HTTP calls to one replica: `ReplicaClient("127.0.0.1:9501", token).get("/v1/status")`.

    Each method returns the `requests.Response`; nothing is raised for an error status, so callers
    read `status_code` and `.json()` themselves."""

    def __init__(self, address, token, timeout=60, session=None):
        self.base = address if "://" in address else f"http://{address}"
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()

    def request(self, method, path, body=b"", content_type=None, headers=None, timeout=None):
        prepared = self.session.prepare_request(
            requests.Request(method, self.base + path, data=body, headers=headers or {})
        )
        if content_type:
            prepared.headers["Content-Type"] = content_type
        # Sign the path as it goes on the wire: requests may re-quote what it was given.
        prepared.headers.update(sign(self.token, method, prepared.path_url, body))
        return self.session.send(prepared, timeout=timeout or self.timeout)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=b"", content_type="application/octet-stream", **kwargs):
        return self.request("POST", path, body=body, content_type=content_type, **kwargs)

    def json(self, path, payload=None, method=None, **kwargs):
        """POST `payload` as JSON (GET when there is none and no method is given)."""
        if payload is None and method in (None, "GET"):
            return self.get(path, **kwargs)
        body = jsonlib.dumps(payload if payload is not None else {}).encode()
        return self.request(method or "POST", path, body=body, content_type="application/json", **kwargs)

    def close(self):
        self.session.close()
