"""Routing weights are set in the admin."""

import pytest

from routing.models import GpuModelWeight, GpuWeight

from ..support import text_of

pytestmark = pytest.mark.django_db


def test_an_admin_sets_a_weight_per_gpu_model_and_per_gpu(admin_client, cluster):
    client = admin_client
    gpu = cluster["node1"][0]

    listed = client.get("/admin/routing/gpumodelweight/")
    assert "H100 8" in text_of(listed) and "any other 1" in text_of(listed)
    added = client.post("/admin/routing/gpumodelweight/add/", {"gpu_model": gpu.model, "weight": "3"})
    assert added.status_code == 302
    refused = client.post("/admin/routing/gpuweight/add/", {"gpu": gpu.pk, "weight": "0"})
    assert refused.status_code == 200 and "greater than or equal to 0.01" in text_of(refused)
    assert client.post("/admin/routing/gpuweight/add/", {"gpu": gpu.pk, "weight": "0.5"}).status_code == 302

    assert GpuModelWeight.objects.get().weight == 3 and GpuWeight.objects.get(gpu=gpu).weight == 0.5
