"""The training jobs' API: a booking's job and its log, for the booking's team, its owner and staff only."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apibase.fields import AwareDateTimeField
from reservations import policy

from .logs import job_log_text
from .models import TrainingJob

LOG_TAIL_BYTES = 64 * 1024
LOG_TAIL_MAX = 1024 * 1024


class JobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reservation = serializers.IntegerField(source="reservation_id")
    status = serializers.CharField()
    reason = serializers.CharField()
    epoch = serializers.IntegerField()
    epochs = serializers.IntegerField()
    metrics = serializers.DictField()
    checkpoint = serializers.CharField()
    resumed_from = serializers.IntegerField(source="resumed_from_id", allow_null=True)
    start_epoch = serializers.IntegerField(allow_null=True)
    batches_lost = serializers.IntegerField(allow_null=True)
    spec = serializers.DictField()
    started_at = AwareDateTimeField(allow_null=True)
    ended_at = AwareDateTimeField(allow_null=True)


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict):  # an error from DRF: keep it readable as text
            return "\n".join(f"{k}: {v}" for k, v in data.items()).encode()
        return data.encode() if isinstance(data, str) else data


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """Training jobs: those of the caller's teams' and own bookings (all, for staff); others are a 404."""

    serializer_class = JobSerializer

    def get_queryset(self):
        jobs = TrainingJob.objects.all()
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return jobs
        return policy.JobViewer(self.request.user).visible(jobs, prefix="reservation__")

    @extend_schema(
        parameters=[OpenApiParameter("bytes", int, description="How much of the end of the log (default 65536).")],
        responses={(200, "text/plain"): str},
    )
    @action(detail=True, methods=["get"], renderer_classes=[PlainTextRenderer])
    def log(self, request, pk=None):
        job = self.get_object()
        try:
            wanted = min(max(int(request.query_params.get("bytes", LOG_TAIL_BYTES)), 1), LOG_TAIL_MAX)
        except ValueError:
            raise ValidationError({"bytes": ["Give a whole number of bytes."]}) from None
        return Response(job_log_text(job, wanted), content_type="text/plain; charset=utf-8")


router = SimpleRouter()
router.register("jobs", JobViewSet, basename="trainingjob")
urlpatterns = router.urls
