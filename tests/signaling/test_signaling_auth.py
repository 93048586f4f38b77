"""HS256 tokens: good, expired, bad signature, malformed, missing, wrong room, bad claims."""

from __future__ import annotations

import time

import jwt
import pytest

from studyrooms.errors import UnauthorizedError
from studyrooms.signaling import dev_secret, issue_token, verify_token

SECRET = "test-secret-" * 6


def test_good_token_round_trips():
    token = issue_token(SECRET, "user-1", "Ada", ["room1", "room2"], 60)
    identity = verify_token(SECRET, token)
    assert identity.user_id == "user-1" and identity.display_name == "Ada"
    assert identity.rooms == ("room1", "room2")
    assert identity.expires_at > time.time()
    assert identity.may_join("room1") and not identity.may_join("room3")  # wrong room
    assert verify_token(SECRET, issue_token(SECRET, "u", "U", ["*"], 60)).may_join("anything")


def test_expired_token():
    token = issue_token(SECRET, "u", "U", ["r"], 60, now=time.time() - 61)
    with pytest.raises(UnauthorizedError, match="expired"):
        verify_token(SECRET, token)


def test_bad_signature():
    token = issue_token(dev_secret(), "u", "U", ["r"], 60)
    with pytest.raises(UnauthorizedError) as info:
        verify_token(SECRET, token)
    assert info.value.code == "unauthorized"


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c", 42, {"token": "x"}, "x" * 5000])
def test_malformed_or_missing(token):
    with pytest.raises(UnauthorizedError):
        verify_token(SECRET, token)


@pytest.mark.parametrize(
    "claims",
    [
        {"name": "U", "rooms": ["r"]},  # no sub
        {"sub": "u", "rooms": ["r"], "noexp": True},  # no exp
        {"sub": "u", "rooms": "r"},
        {"sub": "u", "rooms": [1]},
        {"sub": 5, "rooms": ["r"]},
        {"sub": "u", "name": 7, "rooms": ["r"]},
    ],
)
def test_bad_claims(claims):
    claims = dict(claims)
    if not claims.pop("noexp", False):
        claims["exp"] = int(time.time()) + 60
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(UnauthorizedError):
        verify_token(SECRET, token)


def test_other_algorithms_are_refused():
    claims = {"sub": "u", "rooms": ["r"], "exp": int(time.time()) + 60}
    none_token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(UnauthorizedError):
        verify_token(SECRET, none_token)
    hs512 = jwt.encode(claims, SECRET, algorithm="HS512")
    with pytest.raises(UnauthorizedError):
        verify_token(SECRET, hs512)


def test_dev_secrets_are_random():
    assert dev_secret() != dev_secret() and len(dev_secret()) >= 32


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: "abc", "invalid token: not a well-formed signed token"),
        (lambda: "a.b.c", "invalid token: not a well-formed signed token"),
        (lambda: jwt.encode({"sub": "u", "rooms": ["r"]}, SECRET, algorithm="HS256"), "invalid token: it has no 'exp' claim"),
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),
         "invalid token: not signed with HS256"),
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "nbf": int(time.time()) + 600}, SECRET,
                            algorithm="HS256"), "token not valid yet (is the server's clock right?)"),
    ],
)
def test_refusals_are_in_words_not_the_jwt_library_text(make, expected):
    with pytest.raises(UnauthorizedError) as info:
        verify_token(SECRET, make())
    assert info.value.message == expected
