"""The model registry's API: register a job's weights as a model version, list and show models,
delete a model or one version. A team's models are for its members and staff; others' are a 404.
Deleting is for the team's admins, the user who registered the model and staff: other members get a
403 saying so."""

import re

from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from apibase.fields import AwareDateTimeField
from apibase.serializers import StrictSerializer

from . import registry
from .models import MODEL_NAME, Model, ModelVersion
from .selectors import models_visible


class ModelVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    source_job = serializers.IntegerField(source="source_job_id", allow_null=True)
    source_epoch = serializers.IntegerField(allow_null=True, help_text="Epochs the weights had trained.")
    weights = serializers.CharField(help_text="best or last: which of the job's weights.")
    metrics = serializers.DictField(help_text="The job's metrics when registered (metrics/mAP50-95(B), ...).")
    imgsz = serializers.IntegerField()
    class_names = serializers.ListField(child=serializers.CharField(), help_text="By class id.")
    size = serializers.IntegerField(help_text="Bytes of the stored weights.")
    sha256 = serializers.CharField()
    created = AwareDateTimeField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)


class RegisteredVersionSerializer(ModelVersionSerializer):
    model = serializers.IntegerField(source="model_id")
    name = serializers.CharField(source="model.name")
    team = serializers.CharField(source="model.team.slug")
    ref = serializers.SerializerMethodField(help_text='"name:version", as a serving booking names it.')

    def get_ref(self, obj) -> str:
        return f"{obj.model.name}:{obj.version}"


class ModelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    team = serializers.CharField(source="team.slug")
    created = AwareDateTimeField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    version_count = serializers.IntegerField()
    latest = serializers.SerializerMethodField()

    def get_latest(self, obj) -> ModelVersionSerializer(allow_null=True):
        latest = self.context.get("latest", {}).get(obj.latest_id)
        return ModelVersionSerializer(latest).data if latest is not None else None


class ModelDetailSerializer(ModelSerializer):
    versions = serializers.SerializerMethodField()

    def get_versions(self, obj) -> ModelVersionSerializer(many=True):
        versions = obj.versions.select_related("created_by").order_by("-version")
        return ModelVersionSerializer(versions, many=True).data


NAME_RULE = "Use lower-case letters, digits, '.', '_' and '-' (64 at most), starting with a letter or digit."


class ModelRegisterSerializer(StrictSerializer):
    job = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="The training job whose weights to register.")
    name = serializers.RegexField(MODEL_NAME, max_length=64, error_messages={"invalid": NAME_RULE})
    weights = serializers.ChoiceField(choices=ModelVersion.Weights.choices, default=ModelVersion.Weights.BEST)
    team = serializers.SlugField(
        required=False, help_text="The job's booking's team (the default); a model is registered in the team that trained it."
    )


TEAM_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,50}")


def _list_filters(params):
    """The list's `team` and `name` filters (blank: not filtering), each checked: a value the
    database cannot hold (a NUL byte) or no team slug or model name could be is a 400 naming it."""
    filters = {}
    team, name = params.get("team", ""), params.get("name", "")
    if team:
        if not TEAM_SLUG.fullmatch(team):
            raise ValidationError({"team": ["A team's slug: letters, digits, '-' and '_' (50 at most)."]})
        filters["team__slug"] = team
    if name:
        if not re.fullmatch(MODEL_NAME, name):
            raise ValidationError({"name": [NAME_RULE]})
        filters["name"] = name
    return filters


ForbiddenSerializer = inline_serializer("ModelDeleteForbidden", {"detail": serializers.CharField()})
InUseSerializer = inline_serializer(
    "ModelInUse", {"detail": serializers.CharField(), "bookings": serializers.ListField(child=serializers.IntegerField())}
)


def _in_use(exc):
    return Response({"detail": exc.message, "bookings": exc.bookings}, status=status.HTTP_409_CONFLICT)


class ModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The registry's models: those of the caller's teams (all, for staff)."""

    serializer_class = ModelSerializer
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Model.objects.none()
        models = models_visible(self.request.user).filter(**_list_filters(self.request.query_params))
        latest = ModelVersion.objects.filter(model=OuterRef("pk")).order_by("-version").values("pk")[:1]
        # Explicitly ordered: an aggregate drops the model's default ordering.
        return models.annotate(version_count=Count("versions"), latest_id=Subquery(latest)).order_by("team__slug", "name", "pk")

    def get_serializer_class(self):
        return ModelDetailSerializer if self.action == "retrieve" else ModelSerializer

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["latest"] = getattr(self, "_latest", {})
        return context

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        rows = page if page is not None else list(queryset)
        # The latest versions of the page's models in one query.
        self._latest = ModelVersion.objects.select_related("created_by").in_bulk([m.latest_id for m in rows if m.latest_id])
        return page

    def retrieve(self, request, *args, **kwargs):
        model = self.get_object()
        self._latest = ModelVersion.objects.select_related("created_by").in_bulk([model.latest_id] if model.latest_id else [])
        return Response(self.get_serializer(model).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("team", str, description="Only this team's models (a slug)."),
            OpenApiParameter("name", str, description="Only the model of this name."),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ModelRegisterSerializer, responses={201: RegisteredVersionSerializer})
    def create(self, request):
        """Register a job's weights (best or last, stripped to inference-only) as the next version
        of the named model, made in the job's team if new."""
        serializer = ModelRegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = registry.model_register(
            user=request.user, job_id=data["job"], name=data["name"], weights=data["weights"], team=data.get("team")
        )
        return Response(RegisteredVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None, 403: ForbiddenSerializer, 409: InUseSerializer})
    def destroy(self, request, pk=None):
        """Delete the model and all its versions, unless a serving booking that may still run
        (waitlisted, confirmed or active) uses it (409)."""
        model = self.get_object()
        try:
            registry.model_delete(user=request.user, model_id=model.pk)
        except registry.ModelInUse as exc:
            return _in_use(exc)
        except PermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None  # DRF would drop the message
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={204: None, 403: ForbiddenSerializer, 409: InUseSerializer})
    @action(detail=True, methods=["delete"], url_path=r"versions/(?P<version>[0-9]{1,9})")
    def delete_version(self, request, pk=None, version=None):
        """Delete one version, unless a serving booking that may still run (waitlisted, confirmed or
        active) uses it (by number, or as the latest under its bare name, or resolved at its start): 409."""
        model = self.get_object()
        try:
            registry.version_delete(user=request.user, model_id=model.pk, version=int(version))
        except registry.ModelInUse as exc:
            return _in_use(exc)
        except PermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


router = SimpleRouter()
router.register("models", ModelViewSet, basename="model")
urlpatterns = router.urls
