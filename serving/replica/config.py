"""The replica's configuration: a JSON file the node supervisor writes (mode 0600, it holds the token).

    {"replica": 12, "bind": "127.0.0.1", "port": 9501, "token": "<hex>", "device": "cpu" | "cuda:0",
     "memory_budget": <bytes>, "max_batch": 8, "max_delay_ms": 10, "drain_seconds": 30,
     "metrics_token": "", "max_body_bytes": 33554432, "max_request_pixels": 64000000,
     "models": [{"name": "defects", "version": 3, "sha256": "<hex>", "path": "/store/<sha>.pt",
                 "imgsz": 64, "class_names": ["square", "bar"], "size": 6189226, "pinned": true}]}

`max_request_pixels` caps the pixels of all the images of one predict request together (each
image's size is read from its header before any is decoded; over it is 413 `too_large`): a 32 MiB
body of tiny, highly compressed large PNGs would otherwise decode to tens of gigabytes.

A bad file stops the replica at start with a message naming the field (ConfigError).
"""

import json
import re
from dataclasses import dataclass, field

DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    """One model version this replica serves."""

    name: str
    version: int
    sha256: str
    path: str
    imgsz: int
    class_names: tuple
    size: int
    pinned: bool = False

    @property
    def label(self):
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ReplicaConfig:
    replica: int
    port: int
    token: str
    memory_budget: int
    models: tuple
    bind: str = "127.0.0.1"
    device: str = "cpu"
    max_batch: int = 8
    max_delay_ms: float = 10
    drain_seconds: float = 30
    metrics_token: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the replica configuration {path}: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ConfigError("the replica configuration must be a JSON object")
        models = data.get("models", [])
        if not isinstance(models, list):
            raise ConfigError("models: must be a list")
        specs = tuple(_model(index, entry) for index, entry in enumerate(models))
        labels = [spec.label for spec in specs]
        if len(set(labels)) != len(labels):
            raise ConfigError("models: a name:version appears twice")
        device = _text(data, "device", "cpu")
        if device != "cpu" and not re.match(r"^cuda(:\d+)?$", device):
            raise ConfigError("device: must be 'cpu' or 'cuda:N'")
        known = {
            "replica", "bind", "port", "token", "device", "memory_budget", "max_batch", "max_delay_ms",
            "drain_seconds", "metrics_token", "max_body_bytes", "max_request_pixels", "models",
        }
        return cls(
            replica=_integer(data, "replica", minimum=0),
            bind=_text(data, "bind", "127.0.0.1"),
            port=_integer(data, "port", minimum=0, maximum=65535),
            token=_text(data, "token", required=True),
            device=device,
            memory_budget=_integer(data, "memory_budget", minimum=1),
            max_batch=_integer(data, "max_batch", default=8, minimum=1, maximum=1024),
            max_delay_ms=_number(data, "max_delay_ms", default=10, minimum=0),
            drain_seconds=_number(data, "drain_seconds", default=30, minimum=0),
            metrics_token=_text(data, "metrics_token", ""),
            max_body_bytes=_integer(data, "max_body_bytes", default=DEFAULT_MAX_BODY, minimum=1),
            max_request_pixels=_integer(
                data, "max_request_pixels", default=DEFAULT_MAX_REQUEST_PIXELS, minimum=1
            ),
            models=specs,
            extra={key: value for key, value in data.items() if key not in known},
        )


def _model(index, entry):
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    name = _text(entry, "name", required=True, where=where)
    if not _NAME.match(name):
        raise ConfigError(f"{where}.name: letters, digits, '.', '_' and '-' only")
    sha = _text(entry, "sha256", required=True, where=where).lower()
    if not _SHA256.match(sha):
        raise ConfigError(f"{where}.sha256: must be 64 hexadecimal digits")
    names = entry.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}.class_names: must be a list of strings")
    pinned = entry.get("pinned", False)
    if not isinstance(pinned, bool):
        raise ConfigError(f"{where}.pinned: must be true or false")
    return ModelSpec(
        name=name,
        version=_integer(entry, "version", minimum=1, where=where),
        sha256=sha,
        path=_text(entry, "path", required=True, where=where),
        imgsz=_integer(entry, "imgsz", default=640, minimum=32, maximum=8192, where=where),
        class_names=tuple(names),
        size=_integer(entry, "size", default=0, minimum=0, where=where),
        pinned=pinned,
    )


def _text(data, key, default=None, required=False, where=""):
    value = data.get(key, default)
    if value is None or (required and value == ""):
        raise ConfigError(f"{_at(where, key)}: required")
    if not isinstance(value, str):
        raise ConfigError(f"{_at(where, key)}: must be a string")
    return value


def _integer(data, key, default=None, minimum=None, maximum=None, where=""):
    value = data.get(key, default)
    if value is None:
        raise ConfigError(f"{_at(where, key)}: required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_at(where, key)}: must be an integer")
    _bounds(value, key, minimum, maximum, where)
    return value


def _number(data, key, default=None, minimum=None, maximum=None, where=""):
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{_at(where, key)}: must be a number")
    _bounds(value, key, minimum, maximum, where)
    return value


def _bounds(value, key, minimum, maximum, where):
    if minimum is not None and value < minimum:
        raise ConfigError(f"{_at(where, key)}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{_at(where, key)}: must be at most {maximum}")


def _at(where, key):
    return f"{where}.{key}" if where else key
