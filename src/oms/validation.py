"""Request checks shared by the servicers: collect every bad field, then raise once."""

from __future__ import annotations

import math

from oms.errors import InvalidArgument
from oms.v1 import common_pb2
from sourcing.errors import FieldViolation

MAX_ID_LENGTH = 128
#: Bounds that keep every stored number far inside int64 / float ranges.
MAX_UNITS = 10**12
MAX_MINOR_UNITS = 10**10


class Violations:
    """Field violations of one request; :meth:`raise_if_any` raises INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, reason: str) -> None:
        self.items.append(FieldViolation(field, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def require_id(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "is required")
        elif len(value) > MAX_ID_LENGTH:
            self.add(field, f"is longer than {MAX_ID_LENGTH} characters")

    def location(self, field: str, present: bool, loc: common_pb2.Location) -> None:
        if not present:
            self.add(field, "is required")
            return
        if not (math.isfinite(loc.latitude) and -90 <= loc.latitude <= 90):
            self.add(f"{field}.latitude", f"must be in [-90, 90], got {loc.latitude!r}")
        if not (math.isfinite(loc.longitude) and -180 <= loc.longitude <= 180):
            self.add(f"{field}.longitude", f"must be in [-180, 180], got {loc.longitude!r}")

    def money(
        self, field: str, value: common_pb2.Money, currency: str, *, negative_ok: bool = False
    ) -> None:
        if value.currency_code and value.currency_code != currency:
            self.add(
                f"{field}.currency_code",
                f"must be {currency} (the network's currency), got {value.currency_code!r}",
            )
        if value.minor_units < 0 and not negative_ok:
            self.add(f"{field}.minor_units", f"must not be negative, got {value.minor_units}")
        if abs(value.minor_units) > MAX_MINOR_UNITS:
            self.add(f"{field}.minor_units", f"must be at most {MAX_MINOR_UNITS} in magnitude")

    def units(self, field: str, value: int, *, allow_negative: bool = False) -> None:
        if value < 0 and not allow_negative:
            self.add(field, f"must not be negative, got {value}")
        if abs(value) > MAX_UNITS:
            self.add(field, f"must be at most {MAX_UNITS} in magnitude")
