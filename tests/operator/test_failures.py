"""The failure policy (operator/src/failures.py): which answers are transient, when to retry, what shows."""

from __future__ import annotations

import pytest

from retail_forecast.operator.failures import (
    NO_ANSWER,
    PERMANENT_FIRST_SECONDS,
    PERMANENT_MAX_SECONDS,
    TRANSIENT_FIRST_SECONDS,
    TRANSIENT_MAX_SECONDS,
    VISIBLE_AFTER,
    Failure,
    api_failure,
    retry_delay,
    unexpected_failure,
    visible,
)


@pytest.mark.parametrize("status", [NO_ANSWER, 409, 429, 500, 503, 504])
def test_throttling_server_errors_conflicts_and_no_answer_are_transient(status: int) -> None:
    assert api_failure(status, "", "m", "apply deployments/x").transient


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_client_errors_are_permanent(status: int) -> None:
    assert not api_failure(status, "", "m", "apply deployments/x").transient


def test_the_failure_names_the_request_and_carries_the_servers_reason_and_message() -> None:
    failure = api_failure(
        422, "Invalid", 'admission webhook "w" denied the request: no', "apply deployments/d"
    )
    assert (failure.condition, failure.reason) == ("Reconciled", "Invalid")
    assert failure.message == 'apply deployments/d: 422 admission webhook "w" denied the request: no'
    assert api_failure(NO_ANSWER, "", "timed out", "get forecastmodels/d").reason == "NoAnswer"


def test_transient_failures_back_off_exponentially_up_to_a_minute() -> None:
    failure = api_failure(500, "InternalError", "m", "r")
    delays = [retry_delay(failure, attempt) for attempt in range(1, 10)]
    assert delays[:4] == [TRANSIENT_FIRST_SECONDS * 2**n for n in range(4)]
    assert delays == sorted(delays)
    assert delays[-1] == TRANSIENT_MAX_SECONDS


def test_retry_after_is_honoured_and_never_shortens_the_backoff() -> None:
    assert retry_delay(api_failure(429, "", "m", "r", retry_after=7), 1) == 7
    assert retry_delay(api_failure(429, "", "m", "r", retry_after=1), 4) == TRANSIENT_FIRST_SECONDS * 8
    assert retry_delay(api_failure(429, "", "m", "r", retry_after=86400), 1) == PERMANENT_MAX_SECONDS


def test_permanent_failures_are_retried_slowly_with_a_growing_delay() -> None:
    failure = Failure("ModelVerified", "StoreAccessDenied", "m", transient=False)
    delays = [retry_delay(failure, attempt) for attempt in range(1, 12)]
    assert delays[0] == PERMANENT_FIRST_SECONDS > TRANSIENT_FIRST_SECONDS
    assert delays == sorted(delays)
    assert delays[-1] == PERMANENT_MAX_SECONDS


def test_permanent_failures_show_at_once_transient_ones_only_when_they_last() -> None:
    permanent, transient = api_failure(403, "Forbidden", "m", "r"), api_failure(503, "", "m", "r")
    assert visible(permanent, 1)
    assert [visible(transient, n) for n in range(1, VISIBLE_AFTER + 1)] == [False] * (VISIBLE_AFTER - 1) + [
        True
    ]


def test_an_unexpected_exception_is_a_permanent_failure_that_names_it() -> None:
    failure = unexpected_failure(KeyError("replicas"))
    assert (failure.condition, failure.reason) == ("Reconciled", "UnexpectedError")
    assert failure.message == "KeyError: 'replicas'"
    assert not failure.transient and visible(failure, 1)
    assert retry_delay(failure, 1) == PERMANENT_FIRST_SECONDS
