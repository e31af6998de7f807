"""The sales data contract (DESIGN: long format, one row per series per period)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

DATE: Final = "date"
STORE: Final = "store_id"
ITEM: Final = "item_id"
SALES: Final = "sales"
PRICE: Final = "price"
PROMO: Final = "promo"
EVENT: Final = "event"

REQUIRED_COLUMNS: Final = (DATE, STORE, ITEM, SALES)
OPTIONAL_COLUMNS: Final = (PRICE, PROMO, EVENT)
SERIES_KEY: Final = (STORE, ITEM)


class Freq(StrEnum):
    """Supported sampling frequencies; the season length follows the frequency."""

    DAILY = "D"
    WEEKLY = "W"

    @property
    def season(self) -> int:
        return 7 if self is Freq.DAILY else 52

    @property
    def days(self) -> int:
        return 1 if self is Freq.DAILY else 7

    @property
    def default_horizon(self) -> int:
        return 28 if self is Freq.DAILY else 8


class DataError(ValueError):
    """Input data that breaks the schema; the message names file, row and column where it can."""
