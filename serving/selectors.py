"""Reads of the model registry and of serving bookings."""

from django.conf import settings

from reservations.errors import BookingError

from .models import ModelVersion
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
    pinned = {ref for ref in pinned_refs}
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
