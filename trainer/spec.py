"""The training spec a booking may carry (`job` in the API): whitelisted ultralytics arguments only,
paths only under the configured roots. Devices, output folder and run name are the service's."""

import errno
import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from reservations.models import GPU

# A built-in model config is a bare file name that ultralytics resolves itself (yolov8n.yaml,
# yolo11s.yaml, ...): no directories, so nothing outside its package can be named this way.
BUILTIN_CONFIG = re.compile(r"^yolo[a-z0-9-]*\.ya?ml$")
# A registered model's name: the same rule as serving.models.MODEL_NAME (serving registers it; the
# trainer does not import serving).
MODEL_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
OPTIMIZERS = ["auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp"]
# `resume_from` in a recurring booking's job: the checkpoint of the series' previous occurrence, found
# when the job is due to start (trainer.services.job_resolve_previous).
PREVIOUS = "previous"


@dataclass(frozen=True)
class TrainingSize:
    """Image size and batch: what a job asks of its device's memory and time."""

    imgsz: int
    batch: int


# On a GPU, ultralytics' own defaults. On a CPU device, what trains an epoch of the quick start's demo
# dataset in seconds rather than minutes (the size README's examples use).
GPU_SIZE = TrainingSize(imgsz=640, batch=16)
CPU_SIZE = TrainingSize(imgsz=64, batch=4)


def suggested_size(gpu_model):
    """The image size and batch a job on a device of `gpu_model` starts from."""
    return CPU_SIZE if gpu_model == GPU.CPU_MODEL else GPU_SIZE


def path_under_roots(value, roots, suffixes, what):
    """`value` resolved (symlinks and `..` included) must be an existing file inside one of `roots`."""
    if "\x00" in value:
        raise serializers.ValidationError("Not a valid path.")
    path = Path(value)
    if not path.is_absolute():
        raise serializers.ValidationError(f"Give an absolute path under {', '.join(map(str, roots))}.")
    try:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise serializers.ValidationError(f"{what} must be under {', '.join(map(str, roots))}.")
        if resolved.suffix.lower() not in suffixes:
            raise serializers.ValidationError(f"{what} must be a {' or '.join(suffixes)} file.")
        if not resolved.is_file():
            raise serializers.ValidationError(f"No such file: {value}.")
    # The file system has the last word on a path it is handed: a name too long, a symlink loop
    # (RuntimeError from resolve() before Python 3.13, ELOOP after), no permission to look.
    except RuntimeError:
        raise serializers.ValidationError("Not a usable path: a symlink loop.") from None
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or "unreadable").lower()
        raise serializers.ValidationError(f"Not a usable path: {reason}.") from None
    return str(resolved)


@extend_schema_field({"oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["ram", "disk"]}]})
class CacheField(serializers.Field):
    """ultralytics' `cache`: false, true (same as "ram"), "ram" or "disk"."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or data in ("ram", "disk"):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value

    default_error_messages = {"invalid": 'Use true, false, "ram" or "disk".'}


@extend_schema_field({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": [PREVIOUS]}]})
class ResumeFromField(serializers.Field):
    """`resume_from`: a job's id, or "previous" (a series' occurrence: job_spec_check says where)."""

    default_error_messages = {
        "invalid": f'Give a job id (a whole number from 1), or "{PREVIOUS}" in a recurring booking.'
    }

    def to_internal_value(self, data):
        if data == PREVIOUS:
            return data
        if isinstance(data, bool):  # an int to Python, never a job id
            self.fail("invalid")
        try:
            return serializers.IntegerField(min_value=1).run_validation(data)
        except serializers.ValidationError:
            self.fail("invalid")

    def to_representation(self, value):
        return value


class JobSpecSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=500)
    data = serializers.CharField(max_length=500)
    epochs = serializers.IntegerField(min_value=1, max_value=10_000, default=100)
    imgsz = serializers.IntegerField(min_value=32, max_value=8192, default=GPU_SIZE.imgsz)
    batch = serializers.IntegerField(min_value=1, max_value=4096, default=GPU_SIZE.batch)
    lr0 = serializers.FloatField(min_value=1e-8, max_value=1.0, required=False)
    optimizer = serializers.ChoiceField(choices=OPTIMIZERS, required=False)
    patience = serializers.IntegerField(min_value=0, max_value=10_000, required=False)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    workers = serializers.IntegerField(min_value=0, max_value=64, default=0)
    cache = CacheField(required=False)
    resume_from = ResumeFromField(required=False)
    register_model = serializers.RegexField(
        MODEL_NAME, max_length=64, required=False,
        error_messages={"invalid": "Use lower-case letters, digits, '.', '_' and '-' (64 at most), starting with a letter or digit."},
        help_text="When the job completes, register its best weights as the next version of this model of the team.",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: ["Not an allowed training argument."] for key in unknown}
                )
        return super().to_internal_value(data)

    def validate_model(self, value):
        if BUILTIN_CONFIG.match(value):
            return value
        return path_under_roots(value, settings.MODEL_ROOTS, (".pt",), "A model file")

    def validate_data(self, value):
        return path_under_roots(value, settings.TRAINING_DATA_ROOTS, (".yaml", ".yml"), "The dataset")

    def validate_imgsz(self, value):
        if value % 32:
            raise serializers.ValidationError("Use a multiple of 32.")
        return value
