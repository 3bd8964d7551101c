"""The replicas in the API: where they are and what they hold, and the operators' controls (load,
pin, unload) and a single request, passed on to the replica signed with its token. The token never
leaves the server. Seen by the serving booking's team, its owner and staff (as its job would be);
load and unload by those who may manage the booking (its owner, a team admin, staff)."""

from urllib.parse import urlencode

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied, UnsupportedMediaType, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.request import is_form_media_type
from rest_framework.routers import SimpleRouter

from reservations import policy

from . import services
from .models import Replica
from .serializers import ReplicaSerializer
from .spec import MODEL_REF

# What the replica takes for one request: the API's own limit on bodies does not fit images.
MAX_IMAGE_BYTES = 32 << 20


class ReplicaGone(APIException):
    status_code = 409
    default_code = "replica_unavailable"


class RawBody(BaseParser):
    """Images (or JSON with base64 images) go to the replica as they came. A form is refused: DRF
    hands a form's data to Django as request.POST, which the CSRF check of a signed-in browser reads
    as a dict (bytes there were a 500)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        if is_form_media_type(media_type or ""):
            raise UnsupportedMediaType(media_type, "Send images as image/png, image/jpeg or JSON, not a form.")
        return stream.read(MAX_IMAGE_BYTES + 1) if stream is not None else b""


class ReplicaDetailSerializer(ReplicaSerializer):
    serving = serializers.IntegerField(source="serving_id")
    reservation = serializers.IntegerField(source="serving.reservation_id")


class ReplicaViewSet(viewsets.ReadOnlyModelViewSet):
    """Replicas of the serving bookings the caller may see (all, for staff); others are a 404."""

    serializer_class = ReplicaDetailSerializer

    def get_queryset(self):
        replicas = Replica.objects.select_related("node", "serving__reservation").order_by("-id")
        if getattr(self, "swagger_fake_view", False):
            return replicas
        state = self.request.query_params.get("state")
        if state is not None:
            if state not in Replica.State.values:
                raise ValidationError({"state": [f"One of {', '.join(Replica.State.values)}."]})
            replicas = replicas.filter(state=state)
        return policy.JobViewer(self.request.user).visible(replicas, prefix="serving__reservation__")

    @extend_schema(responses={200: dict}, description="What the replica says of itself now (GET /v1/status).")
    @action(detail=True, methods=["get"])
    def status(self, request, pk=None):
        return self._forward(self.get_object(), "GET", "/v1/status")

    @extend_schema(
        request={"application/json": {"type": "object", "properties": {"pin": {"type": "boolean"}}}},
        responses={200: dict},
        description="Load a model the booking serves (and keep it, with pin), for operators.",
    )
    @action(detail=True, methods=["post"], url_path=r"models/(?P<ref>[^/]+)/load", parser_classes=[RawBody])
    def load(self, request, pk=None, ref=None):
        return self._operate(request, "load", ref)

    @extend_schema(request=None, responses={200: dict}, description="Unload (and unpin) a model, for operators.")
    @action(detail=True, methods=["post"], url_path=r"models/(?P<ref>[^/]+)/unload", parser_classes=[RawBody])
    def unload(self, request, pk=None, ref=None):
        return self._operate(request, "unload", ref)

    @extend_schema(
        request={"image/png": bytes, "image/jpeg": bytes, "application/json": dict},
        responses={200: dict},
        parameters=[OpenApiParameter("conf", float, description="Confidence threshold, 0 to 1.")],
        description="Detections for one image (PNG/JPEG body) or several ({\"images\": [base64, ...]}).",
    )
    @action(detail=True, methods=["post"], url_path=r"models/(?P<ref>[^/]+)/predict", parser_classes=[RawBody])
    def predict(self, request, pk=None, ref=None):
        replica = self.get_object()
        body = request.data if isinstance(request.data, bytes) else b""
        if len(body) > MAX_IMAGE_BYTES:
            raise ValidationError({"images": [f"At most {MAX_IMAGE_BYTES >> 20} MiB per request."]})
        query = f"?{urlencode({'conf': request.query_params['conf']})}" if "conf" in request.query_params else ""
        return self._forward(replica, "POST", f"/v1/models/{_ref(ref)}/predict{query}", body, request.content_type)

    def _operate(self, request, verb, ref):
        replica = self.get_object()
        if not policy.can_manage(request.user, replica.serving.reservation):
            raise PermissionDenied("Only the booking's owner, an admin of its team or staff may load and unload models.")
        body = request.data if isinstance(request.data, bytes) else b""
        return self._forward(replica, "POST", f"/v1/models/{_ref(ref)}/{verb}", body, "application/json")

    def _forward(self, replica, method, path, body=b"", content_type=None):
        try:
            status, content, kind = services.replica_forward(
                replica=replica, method=method, path=path, body=body, content_type=content_type
            )
        except services.ReplicaUnavailable as exc:
            raise ReplicaGone(str(exc)) from None
        # The replica's own answer, as it gave it: its errors already say what was wrong.
        return HttpResponse(content, status=status, content_type=kind)


def _ref(ref):
    if not MODEL_REF.match(ref or ""):
        raise ValidationError({"model": ["Name the model as name or name:version (defects, defects:3)."]})
    return ref


router = SimpleRouter()
router.register("replicas", ReplicaViewSet, basename="replica")
urlpatterns = router.urls
