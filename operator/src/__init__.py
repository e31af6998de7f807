"""ForecastModel operator, imported as `retail_forecast.operator`.

It lives in operator/src/ rather than operator/ itself: a folder `operator/` with an `__init__.py` at
the repository root would shadow the standard library's `operator` whenever Python runs from there
(`python -m pytest`, `python -m pip`).
"""
