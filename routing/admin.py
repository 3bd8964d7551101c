"""Admin: the routing weights (how many requests a replica takes relative to others)."""

from django.contrib import admin

from .models import GpuModelWeight, GpuWeight
from .selectors import DEFAULT_WEIGHTS


@admin.register(GpuModelWeight)
class GpuModelWeightAdmin(admin.ModelAdmin):
    list_display = ["gpu_model", "weight"]
    search_fields = ["gpu_model"]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "subtitle": "Without a row here a GPU model weighs: "
            + ", ".join(f"{marker} {weight:g}" for marker, weight in DEFAULT_WEIGHTS)
            + " (by name), else 1.",
        }
        return super().changelist_view(request, extra_context)


@admin.register(GpuWeight)
class GpuWeightAdmin(admin.ModelAdmin):
    list_display = ["gpu", "weight"]
    list_select_related = ["gpu__node"]
    raw_id_fields = ["gpu"]
