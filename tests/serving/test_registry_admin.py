"""The registry's admin pages: readable, never edited there, and a deletion goes through the
registry (the in-use rule and the audit log hold)."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from reservations.models import AuditEntry
from serving import registry
from serving.models import Model, ModelVersion, Serving

from ..support import book

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("model_store")]

SERVE = {"preload": [], "max_batch": 8, "max_delay_ms": 10, "memory_budget_mb": None}


@pytest.fixture
def root(db, frozen):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_every_page_shows_and_nothing_is_added_or_changed_there(root, owner, trained_job, cluster):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    serving = Serving.objects.get(reservation=book(owner, [cluster["node2"][3]], work={"serve": {"models": ["defects"], **SERVE}}))

    for page in (
        "/admin/serving/model/", f"/admin/serving/model/{version.model_id}/change/",
        f"/admin/serving/model/{version.model_id}/delete/",
        "/admin/serving/modelversion/", f"/admin/serving/modelversion/{version.pk}/change/",
        "/admin/serving/serving/?status__exact=queued", f"/admin/serving/serving/{serving.pk}/change/",
        "/admin/serving/replica/?state__exact=ready",
    ):
        assert root.get(page).status_code == 200, page
    assert root.get("/admin/serving/modelversion/add/").status_code == 403
    assert root.post(f"/admin/serving/modelversion/{version.pk}/change/", {"imgsz": 1280}).status_code == 403
    assert ModelVersion.objects.get(pk=version.pk).imgsz == 64


def test_a_deletion_in_the_admin_is_refused_while_in_use_then_audited(root, owner, trained_job, cluster):
    version = registry.model_register(user=owner, job_id=trained_job(owner).pk, name="defects")
    booking = book(owner, [cluster["node2"][3]], work={"serve": {"models": ["defects"], **SERVE}})

    refused = root.post(f"/admin/serving/model/{version.model_id}/delete/", {"post": "yes"}, follow=True)

    assert f"#{booking.pk}" in refused.content.decode()
    assert Model.objects.filter(pk=version.model_id).exists()
    Serving.objects.filter(reservation=booking).update(status=Serving.Status.STOPPED)
    root.post(f"/admin/serving/modelversion/{version.pk}/delete/", {"post": "yes"})
    assert not ModelVersion.objects.exists()
    assert AuditEntry.objects.filter(action="model_delete", target=f"model:{version.model_id}", actor__username="root").exists()
