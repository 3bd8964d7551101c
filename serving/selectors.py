"""Reads of the model registry and of serving bookings."""

from django.conf import settings

from reservations.errors import BookingError
from reservations.models import Membership, Reservation

from .models import Model, ModelVersion, Replica, Serving
from .spec import parse_ref


def store_path(sha256):
    """Where the content-addressed store keeps the weights with this SHA-256."""
    return settings.MODEL_STORE / f"{sha256}.pt"


def version_for(team, name, version=None):
    """The ModelVersion `name:version` of `team` (version None: its latest), or None."""
    versions = ModelVersion.objects.select_related("model").filter(model__team=team, model__name=name)
    if version is not None:
        return versions.filter(version=version).first()
    return versions.order_by("-version").first()


def resolve_models(team, refs, *, field="serve"):
    """The versions `refs` ("defects:3", "people") name in `team`'s registry, in order; a clear
    BookingError naming the first that is not there."""
    resolved = []
    for ref in refs:
        name, version = parse_ref(ref)
        found = version_for(team, name, version)
        if found is None:
            what = f"model {name!r} has no version {version}" if version else f"no model {name!r}"
            raise BookingError(field, f"models: {what} in team {team.slug}'s registry.")
        resolved.append(found)
    return resolved


def replica_config_models(versions, pinned_refs, refs):
    """The models a replica serves, as its config lists them (serving.replica): path in the store,
    hash, image size, class names; `pinned` for those the booking preloads."""
    pinned = set(pinned_refs)
    return [
        {
            "name": v.model.name,
            "version": v.version,
            "sha256": v.sha256,
            "path": str(store_path(v.sha256)),
            "imgsz": v.imgsz,
            "class_names": list(v.class_names),
            "size": v.size,
            "pinned": ref in pinned,
        }
        for ref, v in zip(refs, versions)
    ]


def replicas_shown():
    """A serving's replicas as its booking's JSON shows them: by device, the newest first, each with
    its node."""
    return Replica.objects.select_related("node").order_by("gpu_id", "-id")


def models_visible(user):
    """The registry's models `user` sees: those of their teams (every team's, for staff). Like jobs,
    another team's models are not to be found out."""
    models = Model.objects.select_related("team", "created_by")
    if user.is_staff:
        return models
    return models.filter(team__memberships__user=user)


def _serving_uses(serving, name, version, latest):
    """Whether `serving` uses model `name` (any version when `version` is None, else that version;
    a name without a version uses the latest, `latest`)."""
    for ref in serving.spec.get("models", []):
        ref_name, ref_version = parse_ref(ref)
        if ref_name == name and (version is None or ref_version == version or (ref_version is None and version == latest)):
            return True
    return any(
        entry.get("name") == name and (version is None or entry.get("version") == version)
        for entry in serving.resolved or []
        if isinstance(entry, dict)
    )


def servings_using(model, version=None):
    """The serving bookings that use `model` (or only its `version`) now or later: not finished, on
    a booking that may still run (waitlisted, confirmed or active: a waitlisted one serves its models
    once promoted). Their team's registry is the model's, so only that team's are read."""
    latest = model.versions.order_by("-version").values_list("version", flat=True).first()
    live = (
        Serving.objects.filter(reservation__team_id=model.team_id, reservation__status__in=Reservation.OPEN_STATUSES)
        .exclude(status__in=Serving.FINISHED)
        .select_related("reservation")
        .order_by("reservation_id")
    )
    return [serving for serving in live if _serving_uses(serving, model.name, version, latest)]


def may_delete_model(user, model):
    """Rule: a model or one of its versions is deleted by an admin of the model's team, the user who
    registered the model, or staff (as load and unload on a replica need more than membership); other
    members may use it but not delete it."""
    if user.is_staff or (model.created_by_id is not None and model.created_by_id == user.pk):
        return True
    return Membership.objects.filter(team_id=model.team_id, user=user, role=Membership.Role.ADMIN).exists()
