"""The usage report for staff: parse the period, ask the selector (where every rule of what counts
lives: selectors.usage_report), render."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apibase.fields import AwareDateTimeField
from apibase.serializers import StrictSerializer

from .. import selectors


class UsageQuerySerializer(StrictSerializer):
    start = AwareDateTimeField(required=False, help_text="Default: 30 days before `end`.")
    end = AwareDateTimeField(required=False, help_text="Default: now.")


class TeamUsageSerializer(serializers.Serializer):
    team = serializers.SlugField()
    team_name = serializers.CharField()
    colour = serializers.CharField()
    quota_gpu_hours_per_week = serializers.IntegerField(
        allow_null=True, help_text="The team's quota of GPU-hours per week, as it is now; null: unlimited."
    )
    bookings = serializers.IntegerField()
    booked_gpu_hours = serializers.FloatField()
    borrowed_gpu_hours = serializers.FloatField(help_text="Of the booked hours, those booked over the quota as borrowed time.")
    used_gpu_hours = serializers.FloatField()
    no_shows = serializers.IntegerField()
    cancellations = serializers.IntegerField()
    cancel_lead_hours_median = serializers.FloatField(allow_null=True)
    cancel_lead_hours_avg = serializers.FloatField(allow_null=True)
    early_releases = serializers.IntegerField()
    preemptions_suffered = serializers.IntegerField()
    preemptions_caused = serializers.IntegerField()
    waitlist_promotions = serializers.IntegerField()
    waitlist_wait_hours_median = serializers.FloatField(allow_null=True)
    waitlist_wait_hours_max = serializers.FloatField(allow_null=True)


class UsageReportSerializer(serializers.Serializer):
    start = AwareDateTimeField()
    end = AwareDateTimeField()
    teams = TeamUsageSerializer(many=True)


class UsageReportView(APIView):
    """Per team over a period: booked (and of those, borrowed) and used GPU-hours against the quota, cancellations, no-shows, early releases,
    preemptions, waitlist waits. Staff only."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(parameters=[UsageQuerySerializer], responses=UsageReportSerializer)
    def get(self, request):
        query = UsageQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        now = timezone.now()
        # A BookingError (an empty or too long period) is the API's 400 naming the field.
        start, end = selectors.usage_period(**query.validated_data, now=now)
        report = {"start": start, "end": end, "teams": selectors.usage_report(start=start, end=end, now=now)}
        return Response(UsageReportSerializer(report).data)
