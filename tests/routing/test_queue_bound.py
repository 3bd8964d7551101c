"""The front door's bounded queue: past ROUTER_MAX_QUEUE requests held, the next is a 429 with
Retry-After at once (before authentication, the database or a replica)."""

import asyncio

from starlette.requests import Request

from routing.app import FrontDoor


def predict_request():
    return Request({
        "type": "http", "method": "POST", "path": "/api/v1/models/defects/predict", "headers": [],
        "query_string": b"", "path_params": {"ref": "defects"},
    })


def test_past_the_queue_bound_a_request_is_429_with_retry_after(settings):
    settings.ROUTER_MAX_QUEUE = 2
    door = FrontDoor()
    door.in_flight = 2

    response = asyncio.run(door.predict(predict_request()))

    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert b'"error":"busy"' in response.body and door.in_flight == 2
