"""Admin: the routing weights (how many requests a replica takes relative to others)."""

from django.contrib import admin, messages

from .models import GpuModelWeight, GpuWeight
from .selectors import DEFAULT_WEIGHTS


@admin.register(GpuModelWeight)
class GpuModelWeightAdmin(admin.ModelAdmin):
    list_display = ["gpu_model", "weight"]
    search_fields = ["gpu_model"]

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            messages.info(
                request,
                "Without a row here a GPU model weighs, by its name: "
                + ", ".join(f"{marker} {weight:g}" for marker, weight in DEFAULT_WEIGHTS)
                + "; any other 1. A GPU's own weight (GPU weights) comes first.",
            )
        return super().changelist_view(request, extra_context)


@admin.register(GpuWeight)
class GpuWeightAdmin(admin.ModelAdmin):
    list_display = ["gpu", "weight"]
    list_select_related = ["gpu__node"]
    raw_id_fields = ["gpu"]
