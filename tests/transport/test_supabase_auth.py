"""Supabase Auth saying "later" is not Supabase Auth saying "no": rate limits (429 with
Retry-After), timeouts (408), unknown 4xx and proxies' error pages keep the session and
back off; a refused password sign-in after the first one waits minutes and is reported;
refresh-token reuse past GoTrue's interval is a revocation. Against our GoTrue double
(respx), with a fake clock for the backoff: no test waits for real time."""

from __future__ import annotations

import logging
from typing import AsyncIterator, Iterator

import httpx
import pytest
import respx
from supabase_auth.types import Session

from jobsys import errors
from jobsys.auth import (
    SIGN_IN_RETRY_MAX_S,
    AuthState,
    AuthUnavailable,
    Credentials,
    JobsysRole,
    TokenKeeper,
    retry_after_s,
    verify_access_token,
)
from jobsys.connect import connect_supabase
from supabase import AsyncClient, AsyncClientOptions, acreate_client
from tests.dashboard.supabase_auth_double import AuthDouble, gotrue_error
from tests.transport.tokens import ANON

URL = "http://supabase.test"
EMAIL, PASSWORD = "pc-01@example.test", "pw"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as mocked:
        yield mocked


@pytest.fixture
def gotrue(router: respx.MockRouter) -> AuthDouble:
    double = AuthDouble(router, expires_in_s=30)  # inside the refresh margin: every token() refreshes
    double.add(EMAIL, PASSWORD, "worker")
    return double


@pytest.fixture
async def client(router: respx.MockRouter) -> AsyncIterator[AsyncClient]:
    made = await acreate_client(URL, ANON.token, options=AsyncClientOptions(
        auto_refresh_token=False, persist_session=False))
    yield made
    await made.auth.close()


def keeper(client: AsyncClient, clock: Clock) -> TokenKeeper:
    """A worker's keeper: it has the password."""
    return TokenKeeper(client, credentials=Credentials(EMAIL, PASSWORD), expected_role=JobsysRole.WORKER,
                       clock=clock)


async def operator_keeper(client: AsyncClient, clock: Clock) -> tuple[TokenKeeper, Session]:
    """A dashboard operator's keeper: a session, no password."""
    signed_in = (await client.auth.sign_in_with_password({"email": EMAIL, "password": PASSWORD})).session
    assert signed_in is not None
    return TokenKeeper(client, session=signed_in, expected_role=JobsysRole.WORKER, clock=clock), signed_in


async def test_a_rate_limited_refresh_keeps_the_session_and_waits_for_retry_after(
        client: AsyncClient, gotrue: AuthDouble, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tokens = keeper(client, clock)
    first = await tokens.token()
    gotrue.rate_limited = {"refresh_token"}
    gotrue.retry_after_s = 120
    with caplog.at_level(logging.WARNING, "jobsys.auth"):
        assert await tokens.token() == first  # still valid: served while Auth asks us to wait
    assert gotrue.sign_in_route.call_count == 1  # not mistaken for a revoked refresh token
    assert tokens.state is AuthState.RETRYING and "rate limited" in (tokens.problem or "")
    assert "rate limited" in caplog.text
    for _ in range(5):
        assert await tokens.token() == first
    assert gotrue.refresh_route.call_count == 1  # nothing sent before Retry-After
    clock.now += 119
    await tokens.token()
    assert gotrue.refresh_route.call_count == 1
    gotrue.rate_limited = set()
    clock.now += 2
    assert await tokens.token() != first
    assert gotrue.refresh_route.call_count == 2 and tokens.state is AuthState.SIGNED_IN


@pytest.mark.parametrize("answer", [
    gotrue_error(408, "request_timeout", "Processing this request timed out"),
    gotrue_error(422, "validation_failed", "something new"),
    httpx.Response(429, text="<html>Too Many Requests</html>", headers={"content-type": "text/html"}),
    httpx.Response(503, text="<html>upstream</html>", headers={"content-type": "text/html"}),
], ids=["408", "unknown-4xx", "proxy-html-429", "gateway-503"])
async def test_other_non_revocations_keep_the_session(client: AsyncClient, gotrue: AuthDouble,
                                                      answer: httpx.Response) -> None:
    clock = Clock()
    tokens, _ = await operator_keeper(client, clock)
    first = await tokens.token()  # refreshed once (30 s tokens)
    gotrue.refresh_route.side_effect = None
    gotrue.refresh_route.return_value = answer
    assert await tokens.token() == first  # an operator's session is not ended by it
    assert not tokens.ended and tokens.state is AuthState.RETRYING


async def test_a_sign_in_refused_later_backs_off_for_minutes_and_is_reported(
        client: AsyncClient, gotrue: AuthDouble, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tokens = keeper(client, clock)
    first = await tokens.token()
    gotrue.revoke(first)  # an admin signed the PC out ...
    gotrue.accounts[EMAIL] = gotrue.add(EMAIL, "changed", "worker")  # ... and changed its password
    with caplog.at_level(logging.WARNING, "jobsys.auth"), pytest.raises(errors.TransportError) as info:
        await tokens.token()
    assert isinstance(info.value, AuthUnavailable) and "login refused" in info.value.message
    assert tokens.state is AuthState.LOGIN_REFUSED and "login refused" in caplog.text
    for _ in range(5):  # calls fail fast: the sign-in limit is not spent on them
        with pytest.raises(AuthUnavailable, match="next attempt in"):
            await tokens.token()
    assert gotrue.sign_in_route.call_count == 2
    gotrue.accounts[EMAIL] = gotrue.add(EMAIL, PASSWORD, "worker")  # the admin put it back
    clock.now += SIGN_IN_RETRY_MAX_S + 1
    assert await tokens.token()
    assert gotrue.sign_in_route.call_count == 3 and tokens.state is AuthState.SIGNED_IN


async def test_a_rate_limited_sign_in_at_start_does_not_stop_the_process(
        router: respx.MockRouter, gotrue: AuthDouble) -> None:
    gotrue.rate_limited = {"password"}  # a fleet behind one NAT restarting after a power cut
    gotrue.retry_after_s = None
    jobs = await connect_supabase(URL, ANON.token, credentials=Credentials(EMAIL, PASSWORD),
                                  role=JobsysRole.WORKER, push=False)
    rpc = router.post("/rest/v1/rpc/mark_stale").respond(200, json=0)
    for _ in range(3):
        with pytest.raises(errors.TransportError, match="rate limited"):
            await jobs.mark_stale()  # a worker retries TransportErrors; it does not stop
    assert gotrue.sign_in_route.call_count == 1 and rpc.call_count == 0
    await jobs.close()


async def test_a_wrong_password_at_start_still_fails_at_once(gotrue: AuthDouble) -> None:
    with pytest.raises(errors.Forbidden, match="Invalid login credentials"):
        await connect_supabase(URL, ANON.token, credentials=Credentials(EMAIL, "wrong"),
                               role=JobsysRole.WORKER, push=False)


async def test_refresh_token_reuse_past_the_interval_is_a_revocation(client: AsyncClient,
                                                                     gotrue: AuthDouble) -> None:
    clock = Clock()
    operator, signed_in = await operator_keeper(client, clock)
    await operator.token()  # spends the first refresh token
    operator._session = signed_in  # as if that answer was lost: the spent token again
    assert await operator.token()  # within GoTrue's reuse interval: a session again
    gotrue.reuse_interval_s = 0
    operator._session = signed_in
    with pytest.raises(errors.Forbidden, match="session ended"):
        await operator.token()
    assert operator.ended

    worker = keeper(client, clock)
    await worker.token()
    refreshed_from = worker._session
    await worker.token()
    worker._session = refreshed_from  # the same spent token, past the interval
    assert await worker.token()  # a worker signs in again with its password
    assert gotrue.sign_in_route.call_count == 3


async def test_a_rate_limited_token_check_is_unavailable_not_unauthorized(
        client: AsyncClient, gotrue: AuthDouble) -> None:
    token = gotrue.access_token(EMAIL)
    gotrue.user_route.side_effect = None
    gotrue.user_route.return_value = httpx.Response(
        429, json={"code": 429, "error_code": "over_request_rate_limit", "msg": "Request rate limit reached"},
        headers={"retry-after": "7"})
    with pytest.raises(AuthUnavailable) as info:  # the API answers 503, not 401: the token may be fine
        await verify_access_token(client, token)
    assert info.value.retry_after_s == 7


def test_retry_after_in_seconds_or_as_a_date() -> None:
    def failure(value: str) -> Exception:
        request = httpx.Request("POST", URL)
        error = Exception("limited")
        error.__cause__ = httpx.HTTPStatusError("429", request=request, response=httpx.Response(
            429, headers={"retry-after": value}, request=request))
        return error

    assert retry_after_s(failure("30")) == 30
    assert retry_after_s(failure("Wed, 21 Oct 2015 07:28:00 GMT")) == 0  # in the past
    assert retry_after_s(failure("soon")) is None
    assert retry_after_s(Exception("no answer")) is None
