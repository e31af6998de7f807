"""Admission control's bookkeeping: what is admitted, what is refused and why, and that places come back."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from retail_forecast.inference.admission import BODY_BYTES, CONCURRENCY, Admission, Overloaded


def test_requests_beyond_the_limit_are_refused_until_a_place_is_free() -> None:
    admission = Admission(max_requests=2, max_body_bytes=1000)
    with ExitStack() as held:
        held.enter_context(admission.admit(10))
        held.enter_context(admission.admit(10))
        with pytest.raises(Overloaded, match="2 requests in progress") as refused, admission.admit(10):
            pass
        assert refused.value.reason == CONCURRENCY
    with admission.admit(10):  # both places came back
        assert (admission.requests, admission.body_bytes) == (1, 10)
    assert (admission.requests, admission.body_bytes) == (0, 0)


def test_body_bytes_are_reserved_but_a_lone_request_of_any_size_is_served() -> None:
    admission = Admission(max_requests=10, max_body_bytes=100)
    with admission.admit(500):  # larger than the budget, but alone: the body limits bound it
        with pytest.raises(Overloaded, match="500 bytes of request bodies") as refused, admission.admit(1):
            pass
        assert refused.value.reason == BODY_BYTES
    with admission.admit(60):
        with admission.admit(40):  # exactly the budget
            pass
        with pytest.raises(Overloaded, match="limit 100"), admission.admit(41):
            pass


def test_a_failing_request_gives_its_place_back() -> None:
    admission = Admission(max_requests=1, max_body_bytes=100)
    with pytest.raises(RuntimeError), admission.admit(50):
        raise RuntimeError("the work failed")
    assert (admission.requests, admission.body_bytes) == (0, 0)


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(max_requests=0, max_body_bytes=1)
