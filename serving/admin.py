"""Admin: the model registry and serving bookings, read-only. Versions are registered through the
API (the weights must reach the store first) and deleted only through the registry's services, so
the in-use rule and the audit log hold here too; servings and replicas are the scheduler's records."""

from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse

from . import registry
from .models import Model, ModelVersion, Replica, Serving

VERSION_FIELDS = [
    "model", "version", "source_job", "source_epoch", "weights", "metrics", "imgsz", "class_names", "size",
    "sha256", "created", "created_by",
]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version", "source_job", "source_epoch", "weights", "imgsz", "size", "sha256", "created", "created_by"]
    readonly_fields = fields
    ordering = ["-version"]
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        # What each row shows (its name, model:version, names the model's team; its job and who
        # registered it), read with the rows rather than per row.
        return super().get_queryset(request).select_related("model__team", "source_job", "created_by")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RegistryDeleteMixin:
    """Deletion through serving.registry: refused (with the bookings named) while a serving booking
    uses it, and audited."""

    def _delete_through_registry(self, request, obj):
        raise NotImplementedError

    @csrf_protect_m
    def delete_view(self, request, object_id, extra_context=None):
        # Not inside the admin's request-wide transaction: the registry's services own theirs.
        return self._delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        try:
            self._delete_through_registry(request, obj)
        except (registry.ModelInUse, Http404) as exc:
            request.registry_refused = True
            self.message_user(request, getattr(exc, "message", str(exc)), messages.ERROR)

    def response_delete(self, request, obj_display, obj_id):
        if getattr(request, "registry_refused", False):
            return HttpResponseRedirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"))
        return super().response_delete(request, obj_display, obj_id)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Model)
class ModelAdmin(RegistryDeleteMixin, ReadOnlyAdmin):
    list_display = ["name", "team", "created", "created_by"]
    list_filter = ["team"]
    list_select_related = ["team", "created_by"]
    search_fields = ["name", "team__slug"]
    readonly_fields = ["team", "name", "created", "created_by"]
    inlines = [ModelVersionInline]

    def get_deleted_objects(self, objs, request):
        # Versions protect their model from a plain delete; the registry deletes them with it.
        listed = [[str(obj), [f"version {version.version}" for version in obj.versions.all()]] for obj in objs]
        return listed, {}, set(), []

    def _delete_through_registry(self, request, obj):
        registry.model_delete(user=request.user, model_id=obj.pk, reason=f"Deleted in the admin: model {obj}.")


@admin.register(ModelVersion)
class ModelVersionAdmin(RegistryDeleteMixin, ReadOnlyAdmin):
    list_display = ["model", "version", "source_job", "source_epoch", "weights", "imgsz", "size", "created"]
    list_filter = ["weights", "model__team"]
    list_select_related = ["model__team", "source_job"]
    search_fields = ["model__name", "sha256"]
    raw_id_fields = ["source_job"]
    readonly_fields = VERSION_FIELDS

    def _delete_through_registry(self, request, obj):
        registry.version_delete(
            user=request.user, model_id=obj.model_id, version=obj.version, reason=f"Deleted in the admin: {obj}."
        )


class ReplicaInline(admin.TabularInline):
    model = Replica
    fields = ["gpu", "node", "device", "address", "state", "reason", "memory_budget", "ready_at", "ended_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        # Each row names its GPU (by its node) and its node: read with the rows, not per row.
        return super().get_queryset(request).select_related("gpu__node", "node")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Serving)
class ServingAdmin(ReadOnlyAdmin):
    list_display = ["id", "reservation", "status", "started_at", "ended_at", "updated"]
    list_filter = ["status"]
    list_select_related = ["reservation"]
    raw_id_fields = ["reservation"]
    readonly_fields = ["reservation", "spec", "status", "reason", "resolved", "created", "updated", "started_at", "ended_at"]
    inlines = [ReplicaInline]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Replica)
class ReplicaAdmin(ReadOnlyAdmin):
    list_display = ["id", "serving", "gpu", "node", "device", "address", "state", "ready_at", "ended_at"]
    list_filter = ["state", "node"]
    list_select_related = ["serving", "gpu__node", "node"]
    raw_id_fields = ["serving", "gpu", "node"]
    # The token signs requests to the replica: not shown.
    exclude = ["token"]
    readonly_fields = [
        "serving", "gpu", "node", "device", "address", "state", "reason", "resident", "memory_budget", "pid",
        "log_path", "spawned_at", "ready_at", "ended_at", "updated",
    ]

    def has_delete_permission(self, request, obj=None):
        return False
