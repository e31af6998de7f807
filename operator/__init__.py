"""ForecastModel operator (`retail_forecast.operator`); never importable as the top-level `operator`."""
