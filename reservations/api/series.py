"""The recurring bookings' API (docs/api.md, "Series"): parse, call services.series, render."""

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apibase.fields import AwareDateTimeField
from apibase.serializers import StrictSerializer

from .. import jobs, recurrence, selectors, services
from ..models import Reservation, Series
from .idempotency import idempotent_series_create
from .pagination import NewestFirstCursorPagination
from .serializers import ReservationCreateSerializer, job_viewer


class SeriesCreateSerializer(ReservationCreateSerializer):
    """What a booking takes (less `waitlist`: on_conflict says what a taken occurrence does), plus the
    recurrence."""

    start = AwareDateTimeField(help_text="The first occurrence's start: a slot boundary, not in the past.")
    recurrence = serializers.CharField(
        max_length=300,
        help_text='An RFC 5545 RRULE of the subset FREQ=DAILY|WEEKLY, INTERVAL, BYDAY, and COUNT or UNTIL, '
        'e.g. "FREQ=WEEKLY;BYDAY=MO,TH;COUNT=8".',
    )
    timezone = serializers.CharField(
        max_length=64, default="UTC",
        help_text="The IANA zone whose wall-clock time the occurrences keep (README: daylight saving).",
    )
    on_conflict = serializers.ChoiceField(choices=Series.OnConflict.choices, default=Series.OnConflict.FAIL)

    def get_fields(self):
        fields = super().get_fields()
        del fields["waitlist"]
        return fields


class SeriesChangeSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=Reservation.Priority.choices, required=False)
    preemptible = serializers.BooleanField(required=False, allow_null=True)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def get_fields(self):
        fields = super().get_fields()
        for field, serializer in jobs.work_kinds.serializer_fields().items():
            serializer.allow_null = True  # null: future occurrences carry no work of this kind
            fields[field] = serializer
        return fields


class SeriesCancelSerializer(StrictSerializer):
    scope = serializers.ChoiceField(choices=[("one", "one"), ("following", "following"), ("all", "all")])
    occurrence = AwareDateTimeField(
        required=False, help_text='The occurrence (its start, as the series lists it): for "one" and "following".'
    )
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class SeriesTransferSerializer(StrictSerializer):
    to = serializers.CharField(max_length=150)
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class OccurrenceSerializer(serializers.Serializer):
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    status = serializers.CharField(
        help_text="The booking's status, or cancelled, skipped (see reason), later (beyond the horizon: booked by beat "
        "as it comes within), due (within it: beat books it within the hour) or missed (its start passed unbooked)."
    )
    reservation = serializers.IntegerField(source="reservation.pk", default=None, allow_null=True)
    gpus = serializers.SerializerMethodField()
    reason = serializers.CharField()
    rebooks = serializers.SerializerMethodField()

    def get_gpus(self, obj) -> list[int]:
        return [a.gpu_id for a in obj.reservation.allocation_list] if obj.reservation is not None else []

    def get_rebooks(self, obj) -> list[int]:
        """The bookings holding the rest of a preempted occurrence."""
        return [r.pk for r in obj.rebooks]


class SeriesSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    user = serializers.CharField(source="user.username")
    team = serializers.CharField(source="team.slug")
    title = serializers.CharField()
    gpus = serializers.ListField(source="gpu_ids", child=serializers.IntegerField(), allow_null=True)
    gpu_count = serializers.IntegerField()
    allow_multi_node = serializers.BooleanField()
    slots = serializers.IntegerField()
    priority = serializers.CharField()
    preemptible = serializers.BooleanField(allow_null=True)
    auto_rebook = serializers.BooleanField()
    borrow = serializers.BooleanField()
    recurrence = serializers.CharField(source="rule")
    start = AwareDateTimeField(source="first_start")
    timezone = serializers.CharField(source="time_zone")
    description = serializers.SerializerMethodField()
    on_conflict = serializers.CharField()
    cancelled = serializers.SerializerMethodField()
    created = AwareDateTimeField()
    job = serializers.SerializerMethodField()
    serve = serializers.SerializerMethodField()

    def get_description(self, obj) -> str:
        """The rule in words: "every weekday at 00:00 Europe/Berlin time, until 31 Jan 2027"."""
        return recurrence.stored_words(obj)

    def get_cancelled(self, obj) -> bool:
        return obj.cancelled_at is not None

    def get_job(self, obj) -> dict | None:
        """The job template each occurrence carries (its team, owner and staff only)."""
        return self._work(obj, "job")

    def get_serve(self, obj) -> dict | None:
        return self._work(obj, "serve")

    def _work(self, obj, field):
        if not job_viewer(self).may_see_booking_of(obj.user_id, obj.team_id):
            return None
        return (obj.work or {}).get(field)


class SeriesDetailSerializer(SeriesSerializer):
    occurrences = serializers.SerializerMethodField()

    def get_occurrences(self, obj) -> list[dict]:
        """Every occurrence of the rule, past and coming, with what became of it."""
        return OccurrenceSerializer(self._schedule(obj), many=True).data

    def _schedule(self, obj):
        if getattr(self, "_schedule_of", (None,))[0] != obj.pk:
            schedule = selectors.series_schedule(
                obj, recurrence.stored_starts(obj), selectors.series_occurrences(obj), now=timezone.now()
            )
            self._schedule_of = (obj.pk, schedule)
        return self._schedule_of[1]


class SeriesCreatedSerializer(SeriesDetailSerializer):
    booked = serializers.SerializerMethodField()
    skipped = serializers.SerializerMethodField()
    waitlisted = serializers.SerializerMethodField()

    # A replayed create (Idempotency-Key) answers from the series as it stands: its occurrences'
    # statuses, as these lists would have named them.
    REPLAYED = {
        "booked": (Reservation.Status.CONFIRMED, Reservation.Status.ACTIVE, Reservation.Status.COMPLETED),
        "waitlisted": (Reservation.Status.WAITLISTED,),
        "skipped": ("skipped",),
    }

    def _outcomes(self, obj, outcome):
        moment = AwareDateTimeField().to_representation
        result = self.context.get("result")
        if result is None:
            return [
                {"start": moment(o.start), "reservation": o.reservation.pk if o.reservation else None, "reason": o.reason}
                for o in self._schedule(obj) if o.status in self.REPLAYED[outcome]
            ]
        return [{"start": moment(o.start), "reservation": o.reservation.pk if o.reservation else None,
                 "reason": o.reason} for o in result.of(outcome)]

    def get_booked(self, obj) -> list[dict]:
        """The occurrences this request booked."""
        return self._outcomes(obj, "booked")

    def get_skipped(self, obj) -> list[dict]:
        """The occurrences that could not be booked (on_conflict skip), each with why."""
        return self._outcomes(obj, "skipped")

    def get_waitlisted(self, obj) -> list[dict]:
        return self._outcomes(obj, "waitlisted")


class SeriesViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Recurring bookings. The list is the caller's teams' series (staff: all); a series itself is
    shown to anyone signed in, as its bookings are on the shared calendar (its job template only to
    its team, owner and staff)."""

    serializer_class = SeriesSerializer
    # Keyset pages, newest first, and no count: a team's series pile up over the years.
    pagination_class = NewestFirstCursorPagination

    def get_queryset(self):
        queryset = selectors.series_queryset().order_by("-created", "-id")
        if self.action == "list" and not getattr(self, "swagger_fake_view", False):
            user = self.request.user
            if not user.is_staff:
                queryset = queryset.filter(team__memberships__user=user)
        return queryset

    def get_serializer_class(self):
        return SeriesDetailSerializer if self.action != "list" else SeriesSerializer

    def _render(self, series, **context):
        series = selectors.series_queryset().get(pk=series.pk)
        return SeriesDetailSerializer(series, context={"request": self.request, **context}).data

    @extend_schema(
        request=SeriesCreateSerializer, responses={201: SeriesCreatedSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def create(self, request, *args, **kwargs):
        serializer = SeriesCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data

        def make(on_created):
            return services.series_create(
                user=request.user, start=data["start"], slots=data["slots"], rule=data["recurrence"],
                tz=data["timezone"], on_conflict=data["on_conflict"], gpu_ids=data.get("gpus"),
                gpu_count=data.get("gpu_count"), allow_multi_node=data["allow_multi_node"],
                priority=data["priority"], preemptible=data["preemptible"], team=data.get("team"),
                title=data["title"], work={field: data.get(field) for field in jobs.work_kinds.kinds},
                auto_rebook=data["auto_rebook"], borrow=data["borrow"], on_created=on_created,
            )

        def render(result):
            series = selectors.series_queryset().get(pk=result.series.pk)
            return SeriesCreatedSerializer(series, context={"request": request, "result": result}).data

        def replay(series_id):
            series = selectors.series_queryset().get(pk=series_id)
            return SeriesCreatedSerializer(series, context={"request": request}).data

        return idempotent_series_create(request, make, render, replay)

    @extend_schema(request=SeriesCancelSerializer, responses=SeriesDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel one occurrence, this one and the following, or the whole series."""
        series = self.get_object()
        serializer = SeriesCancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.series_cancel(
            series_id=series.pk, actor=request.user, scope=data["scope"], occurrence=data.get("occurrence"),
            reason=data["reason"],
        )
        return Response(self._render(series))

    @extend_schema(request=SeriesChangeSerializer, responses=SeriesDetailSerializer)
    @action(detail=True, methods=["post"])
    def change(self, request, pk=None):
        """Change the title, priority, preemptible or work of the occurrences not begun."""
        series = self.get_object()
        serializer = SeriesChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        reason = data.pop("reason")
        # Work is changed only when the body names it (a kind's serializer may default to null).
        work = {field: data.pop(field, None) for field in jobs.work_kinds.kinds}
        if any(field in request.data for field in work):
            data["work"] = {field: spec for field, spec in work.items() if field in request.data}
        if not data:
            raise serializers.ValidationError({"non_field_errors": ["Give at least one field to change."]})
        services.series_change(series_id=series.pk, actor=request.user, reason=reason, now=timezone.now(), **data)
        return Response(self._render(series))

    @extend_schema(request=SeriesTransferSerializer, responses=SeriesDetailSerializer)
    @action(detail=True, methods=["post"])
    def transfer(self, request, pk=None):
        """Pass the series and its occurrences not begun to another member of its team."""
        series = self.get_object()
        serializer = SeriesTransferSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.series_transfer(
            series_id=series.pk, actor=request.user, to=serializer.validated_data["to"],
            reason=serializer.validated_data["reason"],
        )
        return Response(self._render(series))
