"""A team's quota in the admin: set, changed and removed through the quota service, so each change is
one `quota_change` audit entry with the admin as actor (and no generic admin entry beside it)."""

import pytest

from reservations import services
from reservations.models import AuditEntry, TeamQuota

from ..support import text_of

ADD = "/admin/reservations/teamquota/add/"


def quota_form(**values):
    form = {"gpu_hours_per_week": "", "max_gpus": "", "weight": 1, "borrow_gpu_hours_per_week": "", "reason": ""}
    return {**form, **values}


def test_an_admin_sets_a_teams_quota_audited_as_a_quota_change_with_the_admin_as_actor(admin_client, team):
    response = admin_client.post(
        ADD, quota_form(team=team.pk, gpu_hours_per_week=40, max_gpus=4, reason="Q1 budget")
    )

    assert response.status_code == 302, text_of(response)[:2000]
    quota = TeamQuota.objects.get(team=team)
    assert (quota.gpu_hours_per_week, quota.max_gpus, quota.weight, quota.borrow_gpu_hours_per_week) == (40, 4, 1, None)
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.target, entry.reason) == ("quota_change", admin_client.user, f"team:{team.pk}", "Q1 budget")
    assert entry.before is None
    assert entry.after == {"gpu_hours_per_week": 40, "max_gpus": 4, "weight": 1, "borrow_gpu_hours_per_week": None}


def test_an_admin_change_of_a_quota_keeps_before_and_after(admin_client, team, staff):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=40, max_gpus=4)

    response = admin_client.post(
        f"/admin/reservations/teamquota/{team.pk}/change/",
        quota_form(gpu_hours_per_week=60, max_gpus=4, weight=2, borrow_gpu_hours_per_week=10),
    )

    assert response.status_code == 302, text_of(response)[:2000]
    entry = AuditEntry.objects.filter(action="quota_change").latest("id")
    assert entry.actor == admin_client.user
    assert entry.before == {"gpu_hours_per_week": 40, "max_gpus": 4, "weight": 1, "borrow_gpu_hours_per_week": None}
    assert entry.after == {"gpu_hours_per_week": 60, "max_gpus": 4, "weight": 2, "borrow_gpu_hours_per_week": 10}
    assert AuditEntry.objects.count() == 2  # the staff's first setting, then the admin's change: nothing else


def test_removing_a_quota_in_the_admin_makes_the_team_unlimited_and_is_audited(admin_client, team, staff):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=40)

    response = admin_client.post(f"/admin/reservations/teamquota/{team.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not TeamQuota.objects.exists()
    entry = AuditEntry.objects.latest("id")
    assert (entry.action, entry.actor, entry.after) == ("quota_change", admin_client.user, None)
    assert entry.before["gpu_hours_per_week"] == 40


def test_removing_quotas_with_the_list_action_audits_each(admin_client, team, other_team, staff):
    for each in (team, other_team):
        services.team_quota_set(team=each, actor=staff, gpu_hours_per_week=40)

    response = admin_client.post(
        "/admin/reservations/teamquota/",
        {"action": "delete_selected", "_selected_action": [team.pk, other_team.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert not TeamQuota.objects.exists()
    removed = AuditEntry.objects.filter(action="quota_change", after__isnull=True, actor=admin_client.user)
    assert sorted(removed.values_list("target", flat=True)) == sorted([f"team:{team.pk}", f"team:{other_team.pk}"])


def test_a_bad_quota_is_a_form_error_and_changes_nothing(admin_client, team):
    response = admin_client.post(ADD, quota_form(team=team.pk, gpu_hours_per_week=-1, weight=0))

    assert response.status_code == 200
    assert not TeamQuota.objects.exists() and not AuditEntry.objects.exists()
    assert "Ensure this value is greater than or equal to 0." in text_of(response)
    assert "Ensure this value is greater than or equal to 1." in text_of(response)


def test_a_second_quota_for_one_team_is_refused(admin_client, team, staff):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=40)

    response = admin_client.post(ADD, quota_form(team=team.pk, gpu_hours_per_week=10))

    assert response.status_code == 200
    assert TeamQuota.objects.get().gpu_hours_per_week == 40


def test_the_team_admin_shows_the_quota_and_links_to_it(admin_client, team, other_team, staff):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=40, max_gpus=4)

    listed = text_of(admin_client.get("/admin/reservations/team/"))
    page = admin_client.get(f"/admin/reservations/team/{other_team.pk}/change/").content.decode()

    assert "40 GPU-h/week, at most 4 GPUs at once, weight 1" in listed
    assert "unlimited" in listed
    assert f'href="/admin/reservations/teamquota/add/?team={other_team.pk}"' in page
