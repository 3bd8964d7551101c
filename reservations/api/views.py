"""API views: parse, call a service or selector, render. No booking rules here."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import jobs, selectors, services
from ..models import GPU, AuditEntry, Node, Notice
from .filters import AuditFilter, ReservationFilter
from .idempotency import idempotent_create
from .pagination import NewestFirstCursorPagination
from .serializers import (
    AuditEntrySerializer,
    AvailabilityQuerySerializer,
    CancelSerializer,
    GPUSerializer,
    MoveSerializer,
    NodeSerializer,
    NoticeSerializer,
    ReservationCreatedSerializer,
    ReservationCreateSerializer,
    ReservationSerializer,
    StatusSerializer,
    TransferSerializer,
    WindowSerializer,
)


class GPUViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = GPU.objects.select_related("node").order_by("node__hostname", "index")
    serializer_class = GPUSerializer


class NodeViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Node.objects.prefetch_related("gpus").order_by("hostname")
    serializer_class = NodeSerializer


class ReservationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    serializer_class = ReservationSerializer
    filterset_class = ReservationFilter

    def get_queryset(self):
        return selectors.reservation_queryset()

    def _render(self, reservation):
        return self.get_serializer(reservation).data

    @extend_schema(
        request=ReservationCreateSerializer,
        responses={201: ReservationCreatedSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def create(self, request, *args, **kwargs):
        serializer = ReservationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def book(on_booked):
            return services.reservation_create(
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
                work={field: data.get(field) for field in jobs.work_kinds.kinds},
                auto_rebook=data["auto_rebook"],
                borrow=data["borrow"],
                on_booked=on_booked,
            )

        def render(reservation):
            # What the person booking should know at once (its node is offline, ...).
            return {**self._render(reservation), "warnings": reservation.warnings}

        return idempotent_create(request, book, render)

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

    @extend_schema(request=MoveSerializer, responses=ReservationSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        """Move a booking that has not begun to another window, whole, on its GPUs or on `gpus`."""
        reservation = self.get_object()
        serializer = MoveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        reservation = services.reservation_move(
            reservation_id=reservation.pk, actor=request.user, start=data["start"], slots=data["slots"],
            gpu_ids=data.get("gpus"), reason=data["reason"],
        )
        return Response(self._render(selectors.reservation_queryset().get(pk=reservation.pk)))

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
        return Response(StatusSerializer(rows, many=True, context={"request": request}).data)


class NoticeViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = NoticeSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Notice.objects.none()
        return Notice.objects.filter(user=self.request.user)


class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log: staff only, and read-only for everyone; keyset pages, newest first."""

    queryset = AuditEntry.objects.select_related("actor")
    serializer_class = AuditEntrySerializer
    pagination_class = NewestFirstCursorPagination
    permission_classes = [permissions.IsAdminUser]
    filterset_class = AuditFilter


class MeView(APIView):
    """Who the caller is: a cheap authenticated endpoint for clients (and the benchmark's baseline)."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        user = request.user
        return Response({"username": user.get_username(), "is_staff": user.is_staff})
