"""API views: parse, call a service or selector, render. No booking rules here."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer

from trainer.logs import log_tail
from trainer.models import TrainingJob

from .. import selectors, services
from ..models import GPU, AuditEntry, Node, Notice
from .filters import AuditFilter, ReservationFilter
from .idempotency import idempotent_create
from .serializers import (
    AuditEntrySerializer,
    JobSerializer,
    AvailabilityQuerySerializer,
    CancelSerializer,
    GPUSerializer,
    NodeSerializer,
    NoticeSerializer,
    ReservationCreateSerializer,
    ReservationSerializer,
    StatusSerializer,
    TransferSerializer,
    WindowSerializer,
)


LOG_TAIL_BYTES = 64 * 1024
LOG_TAIL_MAX = 1024 * 1024


class PlainTextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict):  # an error from DRF: keep it readable as text
            return "\n".join(f"{k}: {v}" for k, v in data.items()).encode()
        return data.encode() if isinstance(data, str) else data


class GPUViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = GPU.objects.select_related("node").order_by("node__hostname", "index")
    serializer_class = GPUSerializer


class NodeViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Node.objects.prefetch_related("gpus").order_by("hostname")
    serializer_class = NodeSerializer


class ReservationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    queryset = selectors.reservation_queryset()
    serializer_class = ReservationSerializer
    filterset_class = ReservationFilter

    def _render(self, reservation):
        return ReservationSerializer(reservation).data

    @extend_schema(
        request=ReservationCreateSerializer,
        responses={201: ReservationSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def create(self, request, *args, **kwargs):
        serializer = ReservationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def book():
            reservation = services.reservation_create(
                user=request.user,
                start=data["start"],
                slots=data["slots"],
                gpu_ids=data.get("gpus"),
                gpu_count=data.get("gpu_count"),
                allow_multi_node=data["allow_multi_node"],
                priority=data["priority"],
                preemptible=data["preemptible"],
                team=data.get("team"),
                title=data["title"],
                waitlist=data["waitlist"],
                job=data.get("job"),
                auto_rebook=data["auto_rebook"],
            )
            return self._render(reservation), status.HTTP_201_CREATED

        return idempotent_create(request, book)

    @extend_schema(request=CancelSerializer, responses=ReservationSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        reservation = self.get_object()
        serializer = CancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reservation = services.reservation_cancel(
            reservation_id=reservation.pk, actor=request.user, reason=serializer.validated_data["reason"]
        )
        return Response(self._render(reservation))

    @extend_schema(request=TransferSerializer, responses=ReservationSerializer)
    @action(detail=True, methods=["post"])
    def transfer(self, request, pk=None):
        reservation = self.get_object()
        serializer = TransferSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reservation = services.reservation_transfer(
            reservation_id=reservation.pk,
            actor=request.user,
            to=serializer.validated_data["to"],
            reason=serializer.validated_data["reason"],
        )
        return Response(self._render(reservation))


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = TrainingJob.objects.all()
    serializer_class = JobSerializer

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
        return Response(log_tail(job.log_path, wanted), content_type="text/plain; charset=utf-8")


class AvailabilityView(APIView):
    @extend_schema(parameters=[AvailabilityQuerySerializer], responses=WindowSerializer(many=True))
    def get(self, request):
        query = AvailabilityQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        q = query.validated_data
        now = timezone.now()
        windows = selectors.find_windows(
            slots=q["slots"],
            after=q.get("after", now),
            now=now,
            gpu_count=q["gpu_count"],
            gpu_model=q.get("gpu_model"),
            allow_multi_node=q["allow_multi_node"],
            limit=5,
        )
        return Response({"windows": WindowSerializer(windows, many=True).data})


class StatusView(APIView):
    @extend_schema(responses=StatusSerializer(many=True))
    def get(self, request):
        rows = selectors.gpu_status(now=timezone.now())
        return Response(StatusSerializer(rows, many=True).data)


class NoticeViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = NoticeSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Notice.objects.none()
        return Notice.objects.filter(user=self.request.user)


class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log: staff only, and read-only for everyone."""

    queryset = AuditEntry.objects.select_related("actor")
    serializer_class = AuditEntrySerializer
    permission_classes = [permissions.IsAdminUser]
    filterset_class = AuditFilter


class MeView(APIView):
    """Who the caller is: a cheap authenticated endpoint for clients (and the benchmark's baseline)."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        user = request.user
        return Response({"username": user.get_username(), "is_staff": user.is_staff})
