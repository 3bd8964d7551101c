"""Teams and fair sharing: where each of the caller's teams stands against its quota this week, and
a team's week day by day. Parse, ask the selectors (selectors.quotas: every rule of what counts),
render."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apibase.fields import MAX_TIME, MIN_TIME, AwareDateTimeField
from apibase.serializers import StrictSerializer

from .. import policy, selectors
from ..models import Team


class HoursField(serializers.FloatField):
    """GPU-hours, rounded to 2 decimals (as the usage report gives them)."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value):
        return None if value is None else round(value, 2)


class QuotaSerializer(serializers.Serializer):
    gpu_hours_per_week = serializers.IntegerField(allow_null=True, help_text="null: no limit of GPU-hours.")
    max_gpus = serializers.IntegerField(allow_null=True, help_text="GPUs held at once in quota; null: no limit.")
    weight = serializers.IntegerField(help_text="Fair-share weight: the waitlist's order.")
    borrow_gpu_hours_per_week = serializers.IntegerField(
        allow_null=True, help_text="GPU-hours a week the team may borrow over its quota; null: no limit."
    )


class ThisWeekSerializer(serializers.Serializer):
    """A selectors.Standing: the current quota week."""

    week = serializers.CharField(help_text="The quota week, named by the ISO week of its start: 2026-W50.")
    start = AwareDateTimeField(source="week_start")
    end = AwareDateTimeField(source="week_end")
    booked_gpu_hours = HoursField(source="booked_hours", help_text="In quota (borrowed time not counted).")
    borrowed_gpu_hours = HoursField(source="borrowed_hours")
    remaining_gpu_hours = HoursField(
        source="remaining_hours", allow_null=True, help_text="Left in quota this week; null: no limit of GPU-hours."
    )
    gpus_now = serializers.IntegerField(help_text="GPUs the team's in-quota bookings hold now.")


class TeamSerializer(serializers.Serializer):
    """A selectors.Standing, with its team."""

    slug = serializers.SlugField(source="team.slug")
    name = serializers.CharField(source="team.name")
    colour = serializers.CharField(source="team.colour")
    quota = QuotaSerializer(allow_null=True, help_text="null: the team has no quota (unlimited).")
    this_week = ThisWeekSerializer(source="*")


class DayUsageSerializer(serializers.Serializer):
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    booked_gpu_hours = HoursField(source="booked_hours")
    borrowed_gpu_hours = HoursField(source="borrowed_hours")
    used_gpu_hours = HoursField(source="used_hours")


class WeekUsageSerializer(serializers.Serializer):
    """A selectors.WeekUsage."""

    team = serializers.SlugField(source="team.slug")
    week = serializers.CharField()
    start = AwareDateTimeField(source="week_start")
    end = AwareDateTimeField(source="week_end")
    quota = QuotaSerializer(allow_null=True)
    booked_gpu_hours = HoursField(source="booked_hours")
    borrowed_gpu_hours = HoursField(source="borrowed_hours")
    used_gpu_hours = HoursField(source="used_hours")
    remaining_gpu_hours = HoursField(source="remaining_hours", allow_null=True)
    days = DayUsageSerializer(many=True)


WEEK = "Give a quota week as an ISO week between the years 1000 and 9000, like 2026-W50."


class WeekQuerySerializer(StrictSerializer):
    week = serializers.CharField(
        required=False, max_length=10, help_text="An ISO week, like 2026-W50. Default: the current quota week."
    )

    def validate_week(self, label):
        """The start of the quota week `label` names; only a week that exists, written as the API
        writes it (2026-W05, not 2026-W5; 2025-W53 is no week)."""
        try:
            start = policy.week_of_label(label)
        except (ValueError, OverflowError):
            raise serializers.ValidationError(WEEK) from None
        if not MIN_TIME <= start < MAX_TIME or policy.week_label(start) != label:
            raise serializers.ValidationError(WEEK)
        return start


class TeamViewSet(viewsets.GenericViewSet):
    """The caller's teams (staff: every team) and where each stands against its quota this week. A
    team the caller may not look at is a 404, as if it did not exist."""

    serializer_class = TeamSerializer
    lookup_field = "slug"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Team.objects.none()
        return selectors.teams_of(self.request.user)

    def list(self, request):
        """The caller's teams (staff: every team), by name, each with its quota and this week's standing."""
        page = self.paginate_queryset(self.get_queryset())
        standings = selectors.team_standings(page, timezone.now())
        return self.get_paginated_response(TeamSerializer(standings, many=True).data)

    def retrieve(self, request, slug=None):
        """One team, with its quota and this week's standing: for its members and staff."""
        (standing,) = selectors.team_standings([self.get_object()], timezone.now())
        return Response(TeamSerializer(standing).data)

    @extend_schema(parameters=[WeekQuerySerializer], responses=WeekUsageSerializer)
    @action(detail=True)
    def usage(self, request, slug=None):
        """The team's quota week day by day (seven 24-hour days from the week's start): GPU-hours
        booked in quota, borrowed, and used (its bookings' training and serving ran)."""
        team = self.get_object()
        query = WeekQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        now = timezone.now()
        week_start = query.validated_data.get("week") or policy.week_start(now)
        return Response(WeekUsageSerializer(selectors.team_week_usage(team, week_start, now)).data)
