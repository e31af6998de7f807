"""The real service under concurrent load, and its graceful shutdown, over real sockets on 127.0.0.1.

No timing is asserted: every request must be answered, correctly, and counted exactly once; a SIGTERM must
let in-flight requests finish and end the process with exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from retail_forecast.core.data import Panel
from retail_forecast.core.manifest import Manifest
from retail_forecast.inference.limits import Limits

from .live import PeakMemory, Service, forecast_series, infer_body

WORKERS: Final = 16
REQUESTS_PER_WORKER: Final = 50
MAX_BATCH_ROWS: Final = 4096
INFER: Final = "/v2/models/demand/infer"
GRACEFUL_SECONDS: Final = 60


@dataclass(frozen=True)
class Planned:
    label: str
    method: str
    path: str
    expected_status: int
    content: bytes | None = None
    outputs: int = 0  # predictions (v2) or series (forecast) a good answer must carry


@dataclass(frozen=True)
class Outcome:
    planned: Planned
    status: int | None
    body: bytes
    error: str | None


class Workload:
    """Deterministic request mix built from the real model's golden rows and the training panel."""

    def __init__(self, model_dir: Path, panel: Panel) -> None:
        manifest = Manifest.load(model_dir)
        self.golden_in = np.asarray(manifest.golden.inputs, dtype=np.float32)
        self.golden_out = np.asarray(manifest.golden.outputs, dtype=np.float32)
        self.width = len(manifest.features.names)
        self.horizon = manifest.horizon
        history = manifest.min_history + 3
        complete = [s for s in range(panel.n_series) if np.isfinite(panel.sales[s, -history:]).all()]
        assert len(complete) >= 3, "the synthetic panel should have complete recent history"
        self.series = [forecast_series(panel, s, history) for s in complete]

    def rows(self, n: int) -> np.ndarray[Any, Any]:
        return np.resize(self.golden_in, (n, self.width))

    def expected(self, n: int) -> np.ndarray[Any, Any]:
        return np.resize(self.golden_out, n)

    def plan(self, rng: random.Random) -> Planned:
        roll = rng.random()
        if roll < 0.6:
            n = rng.choice([1, rng.randint(1, 256), 256])
            body = orjson.dumps(infer_body(self.rows(n)))
            return Planned(f"infer[{n}]", "POST", INFER, 200, body, outputs=n)
        if roll < 0.75:
            k = rng.randint(1, min(3, len(self.series)))
            series = rng.sample(self.series, k)
            return Planned(f"forecast[{k}]", "POST", "/v1/forecast", 200, orjson.dumps({"series": series}), k)
        return self.bad(rng)

    def bad(self, rng: random.Random) -> Planned:
        rows = self.rows(2)
        short = {**self.series[0], "history": self.series[0]["history"][-3:]}
        choices = [
            Planned("wrong tensor", "POST", INFER, 400, orjson.dumps(infer_body(rows, name="x"))),
            Planned("unknown model", "POST", "/v2/models/nope/infer", 404, orjson.dumps(infer_body(rows))),
            Planned("not json", "POST", INFER, 400, b'{"inputs": ['),
            Planned("wrong width", "POST", INFER, 400, orjson.dumps(infer_body(rows[:, :-1]))),
            Planned(
                "too many rows",
                "POST",
                INFER,
                413,
                orjson.dumps(
                    {
                        "inputs": [
                            {
                                "name": "features",
                                "shape": [MAX_BATCH_ROWS + 1, self.width],
                                "datatype": "FP32",
                                "data": [],
                            }
                        ]
                    }
                ),
            ),
            Planned("short history", "POST", "/v1/forecast", 422, orjson.dumps({"series": [short]})),
            Planned("extra field", "POST", "/v1/forecast", 422, orjson.dumps({"series": [], "x": 1})),
            Planned("no such path", "GET", "/v3/nothing", 404),
            Planned("wrong method", "GET", INFER, 405),
        ]
        return rng.choice(choices)


async def _send(client: httpx.AsyncClient, planned: Planned) -> Outcome:
    headers = {"content-type": "application/json"} if planned.content is not None else None
    try:
        response = await client.request(
            planned.method, planned.path, content=planned.content, headers=headers
        )
    except httpx.HTTPError as exc:
        return Outcome(planned, None, b"", f"{type(exc).__name__}: {exc}")
    return Outcome(planned, response.status_code, response.content, None)


async def _run_load(url: str, workload: Workload) -> list[Outcome]:
    async def worker(index: int) -> list[Outcome]:
        rng = random.Random(1000 + index)
        return [await _send(client, workload.plan(rng)) for _ in range(REQUESTS_PER_WORKER)]

    limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:
        results = await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    return [outcome for batch in results for outcome in batch]


def _requests_counted(url: str) -> tuple[float, dict[tuple[str, str, str], float]]:
    """GET /metrics: the sum of forecast_http_requests_total and its samples by (route, method, status)."""
    response = httpx.get(f"{url}/metrics", timeout=30.0)
    assert response.status_code == 200, response.text
    by_labels: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "forecast_http_requests_total":
                labels = sample.labels
                by_labels[labels["route"], labels["method"], labels["status"]] = sample.value
    return sum(by_labels.values()), by_labels


@pytest.fixture(scope="module")
def workload(model_dir: Path, sales_panel: Panel) -> Workload:
    return Workload(model_dir, sales_panel)


@pytest.fixture
def service(model_dir: Path, tmp_path: Path) -> Iterator[Service]:
    args = ["--model-dir", str(model_dir), "--max-batch-rows", str(MAX_BATCH_ROWS), "--no-access-log"]
    env = {"FORECAST_GRACEFUL_SHUTDOWN_SECONDS": str(GRACEFUL_SECONDS)}
    with Service(args, tmp_path / "serve.log", env) as running:
        running.wait_ready()
        yield running


def test_concurrent_load_is_answered_correctly_and_counted_exactly(
    service: Service, workload: Workload
) -> None:
    outcomes = asyncio.run(_run_load(service.url, workload))
    assert len(outcomes) == WORKERS * REQUESTS_PER_WORKER

    lost = [f"{o.planned.label}: {o.error}" for o in outcomes if o.error is not None]
    assert not lost, f"{len(lost)} request(s) got no response, e.g. {lost[:5]}"
    wrong = [
        f"{o.planned.label}: expected {o.planned.expected_status}, got {o.status}: {o.body[:300]!r}"
        for o in outcomes
        if o.status != o.planned.expected_status
    ]
    assert not wrong, f"{len(wrong)} wrong status(es), e.g. {wrong[:5]}"

    kinds = Counter(o.planned.label.split("[")[0] for o in outcomes)
    assert kinds["infer"] and kinds["forecast"] and sum(o.planned.expected_status >= 400 for o in outcomes)
    for outcome in outcomes:
        body = orjson.loads(outcome.body) if outcome.body else None
        if outcome.planned.expected_status >= 400:
            if outcome.planned.path.startswith(("/v2/models", "/v1")):
                assert isinstance(body, dict) and isinstance(body.get("error"), str), outcome.planned.label
            continue
        assert isinstance(body, dict)
        if outcome.planned.path == INFER:
            output = body["outputs"][0]  # the point forecast; the quantile outputs follow
            n = outcome.planned.outputs
            assert output["shape"] == [n] and len(output["data"]) == n, outcome.planned.label
            np.testing.assert_allclose(
                np.asarray(output["data"], dtype=np.float32), workload.expected(n), rtol=1e-6
            )
        else:
            assert len(body["forecasts"]) == outcome.planned.outputs
            assert all(len(f["points"]) == workload.horizon for f in body["forecasts"])

    # Every answered request is counted once: readiness polls, the load, and then each earlier scrape.
    total, by_labels = _requests_counted(service.url)
    assert total == service.readiness_answers + len(outcomes)
    good_infers = sum(o.planned.path == INFER and o.status == 200 for o in outcomes)
    assert by_labels[("/v2/models/{name}/infer", "POST", "200")] == good_infers
    again, by_labels = _requests_counted(service.url)
    assert again == total + 1
    assert by_labels[("/metrics", "GET", "200")] == 1


async def _held_infer(port: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open an infer request and hold its body back until the app asks for it (HTTP 100 Continue).

    The 100 only comes when the handler awaits the body, so the request is provably in flight.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return reader, writer


async def _finish(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> tuple[int, bytes]:
    writer.write(body)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=120)
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    length = int({k.strip().lower(): v for k, v in headers.items()}[b"content-length"])
    payload = await asyncio.wait_for(reader.readexactly(length), timeout=120)
    writer.close()
    return status, payload


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def _shutdown_while_in_flight(service: Service, body: bytes, held: int) -> list[tuple[int, bytes]]:
    requests = [await _held_infer(service.port, body) for _ in range(held)]
    service.process.send_signal(signal.SIGTERM)
    # Shutdown has begun once the listener is closed; the held requests are still open at that point.
    for _ in range(1200):
        if await _refused(service.port):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the server kept accepting connections after SIGTERM")
    return await asyncio.gather(*(_finish(reader, writer, body) for reader, writer in requests))


def test_sigterm_drains_in_flight_requests_and_exits_0(service: Service, workload: Workload) -> None:
    n = 2048
    body = orjson.dumps(infer_body(workload.rows(n)))
    answers = asyncio.run(_shutdown_while_in_flight(service, body, held=4))
    for status, payload in answers:
        assert status == 200, payload[:300]
        output = orjson.loads(payload)["outputs"][0]  # the point forecast; the quantile outputs follow
        assert output["shape"] == [n]
        np.testing.assert_allclose(
            np.asarray(output["data"], dtype=np.float32), workload.expected(n), rtol=1e-6
        )
    code = service.terminate(timeout=GRACEFUL_SECONDS + 30)
    assert code == 0, f"forecast serve exited with {code} after SIGTERM:\n{service.output()}"


def test_sigterm_first_turns_readiness_false_and_keeps_serving_new_connections(
    model_dir: Path, tmp_path: Path, workload: Workload
) -> None:
    """The shutdown delay: endpoints still route here for a moment after SIGTERM, so keep serving."""
    delay = 120  # far beyond the test's runtime: only the second SIGTERM below may end the process
    args = ["--model-dir", str(model_dir), "--no-access-log", "--shutdown-delay", str(delay)]
    with Service(args, tmp_path / "serve.log") as service:
        service.wait_ready()
        service.process.send_signal(signal.SIGTERM)
        with httpx.Client(base_url=service.url, timeout=30.0) as client:
            for _ in range(600):  # the signal is handled between two bytecodes of the server, soon
                ready = client.get("/v2/health/ready")
                if ready.status_code != 200:
                    break
                time.sleep(0.05)
            assert (ready.status_code, ready.json()) == (503, {"ready": False, "reason": "shutting down"})
        with httpx.Client(base_url=service.url, timeout=30.0) as fresh:  # a new connection
            answer = fresh.post(INFER, content=orjson.dumps(infer_body(workload.rows(5))))
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["outputs"][0]["data"], workload.expected(5), rtol=1e-6)
        assert service.process.poll() is None
        # a second SIGTERM does not wait out the delay
        assert service.terminate(timeout=delay / 2) == 0, service.output()
        assert "closing the listener after the shutdown delay" in service.output()


def test_a_sigterm_repeated_after_the_drain_still_exits_0(model_dir: Path, tmp_path: Path) -> None:
    """A supervisor may repeat SIGTERM while the drained process tears down: that is still a clean stop."""
    args = ["--model-dir", str(model_dir), "--no-access-log", "--shutdown-delay", "0"]
    with Service(args, tmp_path / "serve.log") as service:
        service.wait_ready()
        service.process.send_signal(signal.SIGTERM)
        for _ in range(1200):
            if "stopped after draining" in service.output() or service.process.poll() is not None:
                break
            time.sleep(0.01)
        service.process.send_signal(signal.SIGTERM)  # a no-op if the process is already gone
        assert service.terminate() == 0, service.output()


# -------------------------------------------------------------------------------------------- overload


async def _held(port: int, path: str, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request on `path` whose body is held back until the app asks for it (HTTP 100 Continue): once
    the 100 came, the request was admitted and is in flight."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return reader, writer


async def _refused_unread(port: int, path: str, length: int) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send only the headers of a request that waits for 100 Continue before its body: the final answer
    comes instead, so the server decided without reading a byte of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
    status = int(head.split(b" ", 2)[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    }
    payload = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), timeout=60)
    writer.close()
    return status, headers, payload


def _rejected(url: str) -> dict[str, float]:
    response = httpx.get(f"{url}/metrics", timeout=30.0)
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "forecast_requests_rejected_total"
    }


async def _admission_scenario(service: Service, workload: Workload) -> None:
    infer = orjson.dumps(infer_body(workload.rows(64)))
    forecast = orjson.dumps({"series": workload.series[:1]})
    async with httpx.AsyncClient(base_url=service.url, timeout=60.0) as client:
        # two requests in flight fill --max-concurrency 2; one of them is a forecast
        held = [await _held(service.port, INFER, infer), await _held(service.port, "/v1/forecast", forecast)]
        status, headers, payload = await _refused_unread(service.port, INFER, len(infer))
        assert (status, headers[b"retry-after"]) == (503, b"1"), payload
        assert orjson.loads(payload) == {"error": "server busy: 2 requests in progress, the limit"}
        # probes and metrics are never refused
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2/health/live")).status_code == 200
        assert _rejected(service.url)["concurrency"] == 1
        # the held requests are answered in full once their bodies come
        for (reader, writer), body, path in zip(
            held, (infer, forecast), (INFER, "/v1/forecast"), strict=True
        ):
            answer_status, answer = await _finish(reader, writer, body)
            assert answer_status == 200, (path, answer[:300])
        # places came back
        assert (await client.post(INFER, content=infer)).status_code == 200
        assert (await client.post("/v1/forecast", content=forecast)).status_code == 200
    assert _rejected(service.url) == {"concurrency": 1, "body_bytes": 0, "queue": 0}


def test_a_full_server_refuses_before_reading_and_never_refuses_probes(
    model_dir: Path, tmp_path: Path, workload: Workload
) -> None:
    args = [
        "--model-dir",
        str(model_dir),
        "--no-access-log",
        "--max-concurrency",
        "2",
        "--shutdown-delay",
        "0",
    ]
    with Service(args, tmp_path / "serve.log") as service:
        service.wait_ready()
        asyncio.run(_admission_scenario(service, workload))


FLOOD_CONNECTIONS: Final = 64
FLOOD_ROUNDS: Final = 2
DEFAULT_MAX_BATCH_ROWS: Final = Limits().max_batch_rows


async def _flood(url: str, body: bytes) -> list[httpx.Response | str]:
    limits = httpx.Limits(max_connections=FLOOD_CONNECTIONS, max_keepalive_connections=FLOOD_CONNECTIONS)
    # a generous client timeout: a request the server leaves hanging fails the test instead of hiding
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:

        async def connection() -> list[httpx.Response | str]:
            answers: list[httpx.Response | str] = []
            for _ in range(FLOOD_ROUNDS):
                try:
                    answers.append(await client.post(INFER, content=body))
                except httpx.HTTPError as exc:
                    answers.append(f"{type(exc).__name__}: {exc}")
            return answers

        results = await asyncio.gather(*(connection() for _ in range(FLOOD_CONNECTIONS)))
    return [answer for answers in results for answer in answers]


def test_a_flood_of_the_largest_batches_gets_200s_and_fast_503s_and_leaves_the_server_ready(
    model_dir: Path, tmp_path: Path, workload: Workload
) -> None:
    """The default limits, 64 connections each sending the largest batch they allow, twice."""
    body = orjson.dumps(infer_body(workload.rows(DEFAULT_MAX_BATCH_ROWS)))
    expected = workload.expected(DEFAULT_MAX_BATCH_ROWS)
    args = ["--model-dir", str(model_dir), "--no-access-log", "--shutdown-delay", "0"]
    with Service(args, tmp_path / "serve.log") as service:
        service.wait_ready()
        with PeakMemory(service.process.pid) as memory:
            answers = asyncio.run(_flood(service.url, body))
        failed = [answer for answer in answers if isinstance(answer, str)]
        assert not failed, f"{len(failed)} request(s) got no answer, e.g. {failed[:3]}"
        responses = [answer for answer in answers if not isinstance(answer, str)]
        statuses = Counter(response.status_code for response in responses)
        assert set(statuses) == {200, 503}, statuses  # the flood did overload it, and it kept serving
        for response in responses:
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"].startswith("server busy: "), response.text
            else:
                output = response.json()["outputs"][0]  # the point forecast; the quantile outputs follow
                np.testing.assert_allclose(np.asarray(output["data"], dtype=np.float32), expected, rtol=1e-6)
        assert sum(_rejected(service.url).values()) == statuses[503]
        print(f"flood: {dict(statuses)}; {_rejected(service.url)}; peak RSS +{memory.growth_mib:.0f} MiB")
        # ready again right after, and serving
        assert httpx.get(f"{service.url}/v2/health/ready", timeout=30.0).status_code == 200
        again = httpx.post(
            f"{service.url}{INFER}", content=orjson.dumps(infer_body(workload.rows(5))), timeout=60
        )
        assert again.status_code == 200, again.text


def _sparse_date_attack(n_series: int) -> bytes:
    """The issue's attack: each history three points long, its dates 250 years apart."""
    history = [{"date": d, "sales": 1.0} for d in ("1900-01-01", "1900-01-02", "2150-01-01")]
    return orjson.dumps(
        {"series": [{"store_id": "s", "item_id": f"i{k}", "history": history} for k in range(n_series)]}
    )


@pytest.mark.parametrize("n_series", [40, Limits().max_forecast_series], ids=["6.5KB", "160KB"])
def test_the_sparse_date_attack_is_refused_at_once_without_growing_the_server(
    model_dir: Path, tmp_path: Path, n_series: int
) -> None:
    body = _sparse_date_attack(n_series)
    args = ["--model-dir", str(model_dir), "--no-access-log", "--shutdown-delay", "0"]
    with (
        Service(args, tmp_path / "serve.log") as service,
        httpx.Client(base_url=service.url, timeout=60) as client,
    ):
        service.wait_ready()
        with PeakMemory(service.process.pid) as memory:
            started = time.perf_counter()
            response = client.post("/v1/forecast", content=body)
            elapsed = time.perf_counter() - started
        assert response.status_code == 422, response.text
        assert "history spans 91312 periods" in response.json()["error"]
        growth = memory.growth_mib
        print(
            f"attack of {len(body)} bytes: {response.status_code} in {elapsed:.3f} s, RSS +{growth:.1f} MiB"
        )
        assert elapsed < 1.0  # the bound for the attack: it took 1.3 s and 502 MB
        assert memory.growth_mib < 50


async def _endless_chunked_body(port: int, path: str) -> tuple[int, bytes]:
    """POST a chunked body that never ends; return the answer the server gives while it is still coming."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    chunk = b" " * 16384

    async def keep_sending() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()

    sending = asyncio.create_task(keep_sending())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=60)
        headers = {
            k.strip().lower(): v
            for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        }
        payload = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), timeout=60)
    finally:
        sending.cancel()
        writer.close()
    return int(head.split(b" ", 2)[1]), payload


def test_an_endless_forecast_body_is_refused_while_it_is_read(model_dir: Path, tmp_path: Path) -> None:
    limit = 100_000
    args = [
        "--model-dir",
        str(model_dir),
        "--no-access-log",
        "--shutdown-delay",
        "0",
        "--max-forecast-bytes",
        str(limit),
    ]
    with Service(args, tmp_path / "serve.log") as service:
        service.wait_ready()
        status, payload = asyncio.run(_endless_chunked_body(service.port, "/v1/forecast"))
        assert status == 413, payload
        assert orjson.loads(payload) == {"error": f"request body exceeds the limit of {limit} bytes"}


async def _slow_body_then_next(port: int, url: str, body: bytes) -> tuple[bytes, bytes, int]:
    """A client that sends its headers and a first part of its body, then nothing: the answer it gets
    before the server closes the connection, and what a second client then gets from the only slot."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[:10]
    )
    await writer.drain()
    # the whole answer, up to the server closing the connection (a test that waits out 60 s fails)
    answer = await asyncio.wait_for(reader.read(), timeout=60)
    head, payload = answer.split(b"\r\n\r\n", 1)
    writer.close()
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        second = await client.post(INFER, content=body)
    return head, payload, second.status_code


def test_a_client_slow_with_its_body_is_cut_off_and_frees_its_slot(
    model_dir: Path, tmp_path: Path, workload: Workload
) -> None:
    """With one slot, a client that never finishes its body would refuse everyone else (503) forever."""
    args = ["--model-dir", str(model_dir), "--no-access-log", "--shutdown-delay", "0"]
    args += ["--max-concurrency", "1", "--body-timeout", "1"]
    body = orjson.dumps(infer_body(workload.rows(5)))
    with Service(args, tmp_path / "serve.log") as service:
        service.wait_ready()
        head, payload, second = asyncio.run(_slow_body_then_next(service.port, service.url, body))
        assert head.startswith(b"HTTP/1.1 408"), head
        assert orjson.loads(payload) == {"error": "request body not received within the limit of 1 s"}
        assert second == 200
