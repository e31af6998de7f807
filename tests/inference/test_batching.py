"""The batcher scores requests that wait together in one run, and each gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.admission import QUEUE, Overloaded
from retail_forecast.inference.batching import Batcher, Rows
from retail_forecast.inference.model import load_model


def golden_rows(model_dir: Path, n: int, shift: int = 0) -> Rows:
    rows = np.asarray(Manifest.load(model_dir).golden.inputs, dtype=np.float32)
    return np.ascontiguousarray(np.roll(np.resize(rows, (n, rows.shape[1])), shift, axis=0))


class Recorder:
    """Wraps a predict function and records the size of every run and the thread it ran on."""

    def __init__(self, predict: object) -> None:
        self.predict = predict
        self.runs: list[int] = []
        self.threads: list[str] = []
        self.observed: list[int] = []

    def __call__(self, rows: Rows) -> Rows:
        self.runs.append(len(rows))
        self.threads.append(threading.current_thread().name)
        result: Rows = self.predict(rows)  # type: ignore[operator]
        return result


@pytest.mark.parametrize(
    ("offload_rows", "thread"),
    [(1, "model_0"), (10_000, "MainThread")],
    ids=["on the model thread", "on the event loop"],
)
def test_concurrent_requests_share_a_run_and_get_their_own_predictions(
    model_dir: Path, offload_rows: int, thread: str
) -> None:
    model = load_model(model_dir)
    recorder = Recorder(model.predict)
    requests = [golden_rows(model_dir, n, shift) for shift, n in enumerate((3, 1, 17, 8, 2))]

    async def scenario() -> list[Rows]:
        batcher = Batcher(
            recorder,
            max_rows=1024,
            offload_rows=offload_rows,
            max_queue_rows=1024,
            on_run=recorder.observed.append,
        )
        try:
            return await asyncio.gather(*(batcher.predict(rows) for rows in requests))
        finally:
            batcher.close()

    answers = asyncio.run(scenario())
    # the first request starts the drain; the others queued in the same loop pass, so one run takes all
    assert recorder.runs == recorder.observed == [31]
    assert recorder.threads == [thread]
    for rows, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer, model.predict(rows))


def test_a_run_never_exceeds_max_rows_but_a_large_request_still_runs_alone(model_dir: Path) -> None:
    model = load_model(model_dir)
    recorder = Recorder(model.predict)
    sizes = (40, 40, 40, 300, 10)

    async def scenario() -> list[Rows]:
        batcher = Batcher(recorder, max_rows=100, offload_rows=10_000, max_queue_rows=1000)
        try:
            return await asyncio.gather(*(batcher.predict(golden_rows(model_dir, n)) for n in sizes))
        finally:
            batcher.close()

    answers = asyncio.run(scenario())
    assert recorder.runs == [80, 40, 300, 10]  # in arrival order; 40 + 300 would pass the limit
    assert [len(a) for a in answers] == list(sizes)


def test_a_failed_run_fails_its_waiters_and_the_next_run_goes_on() -> None:
    def predict(rows: Rows) -> Rows:
        if np.any(rows < 0):
            raise ValueError("negative feature")
        summed: Rows = rows.sum(axis=1)
        return summed

    async def scenario() -> tuple[list[Rows | BaseException], Rows]:
        batcher = Batcher(predict, max_rows=4, offload_rows=1, max_queue_rows=100)
        try:
            first = await asyncio.gather(
                batcher.predict(np.ones((2, 3), np.float32)),
                batcher.predict(-np.ones((2, 3), np.float32)),  # spoils the run it shares
                batcher.predict(np.full((3, 3), 2, np.float32)),  # next run: 2 + 2 + 3 > 4
                return_exceptions=True,
            )
            later = await batcher.predict(np.ones((1, 3), np.float32))
            return list(first), later
        finally:
            batcher.close()

    first, later = asyncio.run(scenario())
    assert isinstance(first[0], ValueError) and isinstance(first[1], ValueError)
    np.testing.assert_array_equal(first[2], [6, 6, 6])
    np.testing.assert_array_equal(later, [3])


def test_a_waiter_that_gave_up_is_not_scored_and_does_not_disturb_the_others() -> None:
    runs: list[int] = []

    def predict(rows: Rows) -> Rows:
        runs.append(len(rows))
        return rows[:, 0] * 10

    async def scenario() -> list[Rows]:
        batcher = Batcher(predict, max_rows=100, offload_rows=1_000, max_queue_rows=6)
        try:
            tasks = [
                asyncio.ensure_future(batcher.predict(np.full((n, 2), n, np.float32))) for n in (1, 2, 3)
            ]
            await asyncio.sleep(0)  # all three are queued (the queue is full); the run has not started
            tasks[1].cancel()
            done = await asyncio.gather(tasks[0], tasks[2])
            assert tasks[1].cancelled()
            assert batcher.queued_rows == 0  # the skipped rows left the queue too
            return list(done)
        finally:
            batcher.close()

    first, third = asyncio.run(scenario())
    assert runs == [4]
    np.testing.assert_array_equal(first, [10])
    np.testing.assert_array_equal(third, [30, 30, 30])


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(lambda rows: rows, max_rows=0, offload_rows=1, max_queue_rows=1)


def test_a_full_queue_refuses_more_until_a_run_empties_it() -> None:
    def predict(rows: Rows) -> Rows:
        summed: Rows = rows.sum(axis=1)
        return summed

    async def scenario() -> tuple[list[Rows], str]:
        batcher = Batcher(predict, max_rows=100, offload_rows=1_000, max_queue_rows=10)
        try:
            batcher.check_room()
            # queued in one loop pass, before the first run: 6 rows leave room, 6 + 5 fill the queue;
            # both were admitted while there was room, so both are scored
            six = asyncio.ensure_future(batcher.predict(np.ones((6, 2), np.float32)))
            batcher.check_room()
            five = asyncio.ensure_future(batcher.predict(np.ones((5, 2), np.float32)))
            await asyncio.sleep(0)  # both queued, the run not started
            with pytest.raises(Overloaded) as refused:
                batcher.check_room()
            assert refused.value.reason == QUEUE
            done = list(await asyncio.gather(six, five))
            assert batcher.queued_rows == 0  # the run emptied the queue
            batcher.check_room()
            return done, str(refused.value)
        finally:
            batcher.close()

    (six, five), message = asyncio.run(scenario())
    np.testing.assert_array_equal(six, [2] * 6)
    np.testing.assert_array_equal(five, [2] * 5)
    assert message == "server busy: 11 rows wait for the model (limit 10)"
