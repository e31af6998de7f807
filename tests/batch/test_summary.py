"""The run summary a batch pod leaves as its termination message: what parses, and what never does."""

from __future__ import annotations

import pytest

from retail_forecast.batch.summary import MAX_MESSAGE_BYTES, RunSummary, parse_summary

SUMMARY = RunSummary(
    model="demand",
    version="7",
    sha256="a" * 64,
    output="azureblob://runs/demand/7/demand-batch-1.parquet",
    series=12,
    forecast=10,
    rows=280,
)


def test_a_summary_is_one_line_that_parses_back() -> None:
    message = SUMMARY.message()
    assert "\n" not in message
    assert parse_summary(message) == SUMMARY
    assert parse_summary(message.replace('"version"', '"later":1,"version"')) == SUMMARY  # newer writers


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        "predict: series forecast: 10 (280 rows)\nwrote 280 forecasts",  # a log tail
        SUMMARY.message()[:-10],  # cut short
        SUMMARY.message().replace('"rows":280', '"rows":-1'),
        SUMMARY.message().replace('"rows":280', '"rows":"280"'),  # never coerced
        SUMMARY.message().replace(',"rows":280', ""),  # a field missing
        SUMMARY.message().replace("a" * 64, "not-a-sha"),
        SUMMARY.model_copy(update={"output": "x" * MAX_MESSAGE_BYTES}).message(),  # the kubelet truncates
    ],
)
def test_anything_else_is_no_summary(message: str | None) -> None:
    assert parse_summary(message) is None
