"""/api/v1/models/: register a job's weights, list and show a team's models, delete them; the same
privacy as jobs, bad input a 400 naming the field, in use a 409 naming the bookings."""

import pytest

from reservations import services
from reservations.models import AuditEntry
from serving.models import Model
from serving.selectors import store_path
from trainer.models import TrainingJob

from ..support import book, client_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("model_store")]

URL = "/api/v1/models/"
SERVE = {"preload": [], "max_batch": 8, "max_delay_ms": 10, "memory_budget_mb": None}


def _register(client, job, name="defects", **extra):
    return client.post(URL, {"job": job.pk, "name": name, **extra}, format="json")


def test_registering_answers_with_the_version(owner, trained_job):
    job = trained_job(owner)

    response = _register(client_for(owner), job)

    assert response.status_code == 201, response.json()
    body = response.json()
    model = Model.objects.get()
    assert body["model"] == model.pk and body["name"] == "defects" and body["team"] == "vision"
    assert body["version"] == 1 and body["ref"] == "defects:1"
    assert body["source_job"] == job.pk and body["source_epoch"] == 1 and body["weights"] == "best"
    assert body["imgsz"] == 64 and body["metrics"]["metrics/mAP50-95(B)"] == 0.125
    assert body["class_names"] and all(isinstance(name, str) for name in body["class_names"])
    assert store_path(body["sha256"]).stat().st_size == body["size"]
    assert body["created_by"] == "owner" and body["created"].endswith("Z")
    assert AuditEntry.objects.filter(action="model_register", target=f"model:{model.pk}", actor=owner).exists()


def test_the_list_shows_the_teams_models_to_its_members_and_staff_only(owner, teammate, outsider, staff, trained_job):
    job = trained_job(owner)
    client = client_for(owner)
    _register(client, job)
    _register(client, job, weights="last")
    _register(client, job, name="people")

    listed = client_for(teammate).get(URL).json()
    assert listed["count"] == 2
    defects = next(row for row in listed["results"] if row["name"] == "defects")
    assert defects["version_count"] == 2 and defects["latest"]["version"] == 2 and defects["latest"]["weights"] == "last"
    assert client_for(outsider).get(URL).json()["count"] == 0
    assert client_for(staff).get(URL).json()["count"] == 2
    assert [row["name"] for row in client_for(staff).get(URL, {"name": "people"}).json()["results"]] == ["people"]
    assert client_for(staff).get(URL, {"team": "nlp"}).json()["count"] == 0


def test_the_detail_shows_every_version(owner, teammate, outsider, staff, trained_job):
    job = trained_job(owner)
    model_id = _register(client_for(owner), job).json()["model"]
    _register(client_for(owner), job, weights="last")

    detail = client_for(teammate).get(f"{URL}{model_id}/")

    assert detail.status_code == 200
    body = detail.json()
    assert [v["version"] for v in body["versions"]] == [2, 1] and body["latest"]["version"] == 2
    assert set(body["versions"][0]) >= {
        "version", "source_job", "source_epoch", "metrics", "imgsz", "class_names", "size", "sha256", "created",
    }
    assert client_for(outsider).get(f"{URL}{model_id}/").status_code == 404
    assert client_for(staff).get(f"{URL}{model_id}/").status_code == 200
    assert client_for(owner).get(f"{URL}abc/").status_code == 404


def test_another_teams_job_is_answered_like_an_unknown_one(owner, outsider, trained_job):
    job = trained_job(owner)
    missing = TrainingJob.objects.order_by("-pk").first().pk + 100

    others = _register(client_for(outsider), job)
    unknown = client_for(outsider).post(URL, {"job": missing, "name": "defects"}, format="json")

    assert (others.status_code, unknown.status_code) == (400, 400)
    assert others.json() == {"job": [f"No job {job.pk}."]}
    assert unknown.json() == {"job": [f"No job {missing}."]}


def test_a_job_without_weights_is_a_400_saying_so(owner, trained_job):
    job = trained_job(owner, status=TrainingJob.Status.FAILED, files=())

    response = _register(client_for(owner), job)

    assert response.status_code == 400
    assert response.json() == {"weights": [f"Job {job.pk} has no best weights to register (none was saved)."]}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"job": 1, "name": "defects", "weigths": "best"}, "weigths"),
        ({"job": 1, "name": "Defects!"}, "name"),
        ({"job": 1, "name": "x" * 65}, "name"),
        ({"job": 1, "name": ["defects"]}, "name"),
        ({"name": "defects"}, "job"),
        ({"job": "one", "name": "defects"}, "job"),
        ({"job": 10**30, "name": "defects"}, "job"),
        ({"job": 1, "name": "defects", "weights": "middle"}, "weights"),
        ({"job": 1, "name": "defects", "team": "no such/team"}, "team"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(owner, body, field):
    response = client_for(owner).post(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_a_body_that_is_not_an_object_is_a_400(owner):
    response = client_for(owner).post(URL, ["defects"], format="json")

    assert response.status_code == 400


def test_deleting_is_refused_while_a_live_serving_booking_uses_the_model(owner, trained_job, cluster):
    client = client_for(owner)
    created = _register(client, trained_job(owner)).json()
    serving = book(owner, [cluster["node2"][3]], work={"serve": {"models": ["defects"], **SERVE}})

    refused = client.delete(f"{URL}{created['model']}/")
    refused_version = client.delete(f"{URL}{created['model']}/versions/1/")

    assert (refused.status_code, refused_version.status_code) == (409, 409)
    assert refused.json()["bookings"] == [serving.pk] and f"#{serving.pk}" in refused.json()["detail"]
    services.reservation_cancel(reservation_id=serving.pk, actor=owner, reason="done")
    assert client.delete(f"{URL}{created['model']}/").status_code == 204
    assert client.get(f"{URL}{created['model']}/").status_code == 404
    assert not store_path(created["sha256"]).exists()
    assert AuditEntry.objects.filter(action="model_delete", target=f"model:{created['model']}", actor=owner).exists()


def test_deleting_a_version(owner, trained_job):
    client = client_for(owner)
    job = trained_job(owner)
    created = _register(client, job).json()
    _register(client, job, weights="last")

    assert client.delete(f"{URL}{created['model']}/versions/1/").status_code == 204
    assert client.delete(f"{URL}{created['model']}/versions/1/").status_code == 404
    assert [v["version"] for v in client.get(f"{URL}{created['model']}/").json()["versions"]] == [2]


def test_others_cannot_delete_a_teams_model(owner, outsider, trained_job):
    created = _register(client_for(owner), trained_job(owner)).json()

    assert client_for(outsider).delete(f"{URL}{created['model']}/").status_code == 404
    assert client_for(outsider).delete(f"{URL}{created['model']}/versions/1/").status_code == 404
    assert Model.objects.filter(pk=created["model"]).exists()


def test_a_teammate_sees_the_model_but_may_not_delete_it(owner, teammate, trained_job):
    created = _register(client_for(owner), trained_job(owner)).json()
    client = client_for(teammate)

    for path in (f"{created['model']}/", f"{created['model']}/versions/1/"):
        refused = client.delete(f"{URL}{path}")
        assert refused.status_code == 403, path
        assert refused.json() == {"detail": (
            "Only an admin of team vision, the user who registered model defects (owner) or staff may delete it or its versions."
        )}
    assert client.get(f"{URL}{created['model']}/").status_code == 200
    assert Model.objects.filter(pk=created["model"]).exists()


@pytest.mark.parametrize("who", ["team_admin", "staff"])
def test_a_team_admin_and_staff_may_delete_a_model_they_did_not_register(request, owner, trained_job, who):
    created = _register(client_for(owner), trained_job(owner)).json()
    client = client_for(request.getfixturevalue(who))

    assert client.delete(f"{URL}{created['model']}/versions/1/").status_code == 204
    assert client.delete(f"{URL}{created['model']}/").status_code == 204
    assert not Model.objects.exists()


def test_anonymous_callers_are_turned_away(client):
    assert client.get(URL).status_code == 401


@pytest.mark.parametrize(
    "query, field",
    [
        ({"team": "\x00"}, "team"),
        ({"team": "vision\x00"}, "team"),
        ({"team": "no such/team"}, "team"),
        ({"team": "t" * 51}, "team"),
        ({"name": "\x00"}, "name"),
        ({"name": "defects\x00"}, "name"),
        ({"name": "defects\n"}, "name"),
        ({"name": "Defects!"}, "name"),
        ({"name": "x" * 65}, "name"),
    ],
)
def test_a_bad_list_filter_is_a_400_naming_it(owner, staff, query, field):
    for user in (owner, staff):
        response = client_for(user).get(URL, query)

        assert response.status_code == 400, response.content
        assert list(response.json()) == [field]


def test_odd_ids_and_versions_are_a_404(owner, trained_job):
    client = client_for(owner)
    model_id = _register(client, trained_job(owner)).json()["model"]

    for path in (f"{10**30}/", f"{2**63}/", "0/", f"{model_id}/versions/{10**30}/", f"{model_id}/versions/0/",
                 f"{model_id}/versions/-1/", f"{model_id}/versions/1.0/", f"{10**30}/versions/1/", "%00/"):
        assert client.get(f"{URL}{path}").status_code in (404, 405), path
        assert client.delete(f"{URL}{path}").status_code == 404, path
    assert client.get(f"{URL}{model_id}/").status_code == 200
