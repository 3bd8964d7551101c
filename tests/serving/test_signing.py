"""Signed replica requests: what `verify` accepts and what it refuses. No database."""

import pytest

from serving.replica.config import ConfigError, ReplicaConfig
from serving.signing import SIGNATURE_HEADER, TIME_HEADER, sign, verify

TOKEN = "a1" * 16
NOW = 1_900_000_000
BODY = b"\x89PNG image bytes"


def signed(**changes):
    request = {"method": "POST", "path": "/v1/models/defects:3/predict?conf=0.5", "body": BODY}
    headers = sign(TOKEN, now=NOW, **request)
    request.update(changes)
    return request, headers


def test_a_request_signed_with_the_token_verifies():
    request, headers = signed()

    assert verify(TOKEN, headers=headers, now=NOW + 59, **request)
    assert set(headers) == {TIME_HEADER, SIGNATURE_HEADER} and headers[TIME_HEADER] == str(NOW)


def test_headers_are_found_whatever_their_case():
    request, headers = signed()

    assert verify(TOKEN, headers={k.lower(): v for k, v in headers.items()}, now=NOW, **request)


@pytest.mark.parametrize("change", [
    {"method": "GET"},
    {"path": "/v1/models/defects:3/predict?conf=0.1"},
    {"path": "/v1/models/defects:4/predict?conf=0.5"},
    {"body": BODY + b"!"},
], ids=["method", "query", "path", "body"])
def test_a_signature_does_not_cover_another_request(change):
    request, headers = signed(**change)

    assert not verify(TOKEN, headers=headers, now=NOW, **request)


@pytest.mark.parametrize("now", [NOW + 61, NOW - 61], ids=["stale", "from-the-future"])
def test_a_signature_outside_the_allowed_skew_is_refused(now):
    request, headers = signed()

    assert not verify(TOKEN, headers=headers, now=now, **request)


@pytest.mark.parametrize("headers", [
    {},
    {TIME_HEADER: str(NOW)},
    {TIME_HEADER: "yesterday", SIGNATURE_HEADER: "00"},
    {TIME_HEADER: str(NOW), SIGNATURE_HEADER: "\u00e9" * 64},
    {TIME_HEADER: str(NOW), SIGNATURE_HEADER: "0" * 63 + "\u00b2"},
    {TIME_HEADER: str(NOW), SIGNATURE_HEADER: b"0" * 64},
], ids=["none", "no-signature", "bad-time", "non-ascii", "superscript-digit", "bytes"])
def test_missing_or_malformed_headers_are_refused(headers):
    request, _ = signed()

    assert not verify(TOKEN, headers=headers, now=NOW, **request)


def test_another_token_or_no_token_does_not_verify():
    request, headers = signed()

    assert not verify("b2" * 16, headers=headers, now=NOW, **request)
    assert not verify("", headers=headers, now=NOW, **request)


def test_a_replica_configuration_names_the_field_it_refuses():
    good = {"replica": 1, "port": 9501, "token": "t", "memory_budget": 1000, "models": [
        {"name": "defects", "version": 3, "sha256": "ab" * 32, "path": "/store/x.pt"}]}
    assert ReplicaConfig.from_dict(good).models[0].label == "defects:3"
    assert ReplicaConfig.from_dict(good).max_request_pixels == 64_000_000

    for broken, field in [
        ({**good, "memory_budget": 0}, "memory_budget"),
        ({**good, "device": "tpu"}, "device"),
        ({**good, "token": ""}, "token"),
        ({**good, "models": [{**good["models"][0], "sha256": "xyz"}]}, "models[0].sha256"),
        ({**good, "models": good["models"] * 2}, "models"),
        ({**good, "max_request_pixels": 0}, "max_request_pixels"),
    ]:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
            ReplicaConfig.from_dict(broken)
