"""Batch forecasting (`forecast predict`) and accuracy monitoring once actuals land (`forecast evaluate`)."""
