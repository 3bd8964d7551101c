from collections import Counter

import pytest

from reservations.models import IdempotencyRecord, Reservation

from ..support import NEXT_SLOT, client_for, iso, race

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"


def test_a_retry_with_the_same_key_returns_the_first_response_and_books_once(api, cluster):
    body = {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}

    first = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="ci-run-42")
    retry = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="ci-run-42")

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert Reservation.objects.count() == 1


def test_the_same_key_with_a_different_body_is_refused(api, cluster):
    api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    response = api.post(URL, {"gpus": [cluster["node1"][1].pk], "start": iso(NEXT_SLOT), "slots": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 422
    assert Reservation.objects.count() == 1


def test_another_user_sending_the_same_key_gets_a_fresh_answer_not_the_replay(api, cluster, outsider):
    body = {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}
    api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    other = client_for(outsider).post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    assert other.status_code == 409  # a fresh request of its own, not the owner's replayed response


def test_a_failed_request_is_not_remembered(api, cluster):
    bad = {"gpus": [cluster["node1"][0].pk], "start": "2030-01-07T11:00:00Z", "slots": 1}
    good = {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}

    assert api.post(URL, bad, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 400
    assert not IdempotencyRecord.objects.exists()
    assert api.post(URL, bad | good, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201


def test_an_overlong_key_is_a_400(api, cluster):
    body = {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}

    response = api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="k" * 300)

    assert response.status_code == 400 and "Idempotency-Key" in response.json()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("selection", [{"gpus": "first"}, {"gpu_count": 2}])
def test_concurrent_retries_with_one_key_book_once_and_all_get_the_same_answer(owner, cluster, selection):
    body = {"start": iso(NEXT_SLOT), "slots": 1, **selection}
    if body.get("gpus") == "first":
        body["gpus"] = [cluster["node1"][0].pk]

    responses = race([client_for(owner) for _ in range(8)], body, HTTP_IDEMPOTENCY_KEY="same")
    answers = [(response.status_code, response.json().get("id")) for response in responses]

    assert Reservation.objects.count() == 1
    assert Counter(answers) == {(201, Reservation.objects.get().pk): 8}
