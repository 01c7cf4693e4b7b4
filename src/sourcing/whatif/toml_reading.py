"""Reading a scenario file's TOML tables: typed getters whose errors name the file and key.

Each getter checks one kind of value (a non-empty string, a whole number, money as
exact millicents, a date, a list of weights...) and raises a
:class:`~sourcing.whatif.inputs.ScenarioError` naming the file, the dotted key and
the reason, so a planner's typo is reported where it is, never as a traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Final

from sourcing.model import parse_money
from sourcing.whatif.inputs import ScenarioError, naive_utc

__all__ = ["MISSING", "Section"]

#: A getter's ``default`` when the key is required.
MISSING: Final[Any] = object()


@dataclass(frozen=True)
class Section:
    """One TOML table with typed getters whose errors name the file and key."""

    file: str
    base: Path
    path: str
    data: Mapping[str, Any]

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str | None, reason: str) -> ScenarioError:
        return ScenarioError(self.file, reason, key=self.key(name) if name else self.path or None)

    def allow(self, *names: str) -> None:
        for name in self.data:
            if name not in names:
                raise self.error(name, f"unknown key (expected one of: {', '.join(names)})")

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, default: Any) -> Any:
        if name in self.data:
            return self.data[name]
        if default is MISSING:
            raise self.error(name, "required key is missing")
        return default

    def text(self, name: str, default: Any = MISSING) -> Any:
        value = self._get(name, default)
        if value is not default and (not isinstance(value, str) or not value.strip()):
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: Any = MISSING) -> Any:
        if (value := self.text(name, default)) not in options:
            raise self.error(name, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def boolean(self, name: str, default: Any = MISSING) -> Any:
        value = self._get(name, default)
        if value is not default and not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def integer(self, name: str, default: Any = MISSING, minimum: int = 0) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be a whole number, got {value!r}")
        if value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        return value

    def number(self, name: str, default: Any = MISSING, *, positive: bool = False) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise self.error(
                name,
                f"must be a {'positive' if positive else 'non-negative'} number, got {value!r}",
            )
        return number

    def degrees(self, name: str, limit: float) -> float:
        value = self._get(name, MISSING)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {value!r}")
        if not (math.isfinite(value) and -limit <= value <= limit):
            raise self.error(name, f"must be within [-{limit:g}, {limit:g}], got {value}")
        return float(value)

    def money(self, name: str, default: Any = MISSING) -> Any:
        """Currency units (at most 5 decimals) as exact integer millicents."""
        value = self._get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(name, f"must be an amount of money, got {value!r}")
        try:
            return parse_money(str(value))
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def strings(self, name: str, default: Any = MISSING) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"must be a list of non-empty strings, got {value!r}")
        if len(set(value)) != len(value):
            raise self.error(name, "lists a name more than once")
        return tuple(value)

    def weights(self, name: str, default: Any = MISSING) -> Any:
        value = self._get(name, default)
        if value is default:
            return value
        if (
            not isinstance(value, list)
            or not value
            or not all(
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v >= 0
                for v in value
            )
            or sum(value) <= 0
        ):
            raise self.error(
                name, f"must be a list of non-negative numbers, not all 0, got {value!r}"
            )
        return tuple(float(v) for v in value)

    def path_value(self, name: str, default: Any = MISSING) -> Any:
        value = self.text(name, default)
        if value is default:
            return value
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self.base / path

    def moment(self, name: str, default: Any = MISSING) -> Any:
        value = self._get(name, default)
        if value is default or isinstance(value, datetime):
            return naive_utc(value) if isinstance(value, datetime) else value
        if isinstance(value, date):
            return datetime.combine(value, time())
        if isinstance(value, str):
            try:
                return naive_utc(datetime.fromisoformat(value.strip()))
            except ValueError:
                pass
        raise self.error(name, f"must be a date or date-time (ISO 8601), got {value!r}")

    def day(self, name: str, default: Any = MISSING) -> Any:
        value = self.moment(name, default)
        return value.date() if isinstance(value, datetime) else value

    def table(self, name: str) -> Section | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(name, "must be a table")
        return Section(self.file, self.base, self.key(name), value)

    def tables(self, name: str) -> list[Section]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(name, "must be an array of tables")
        return [
            Section(self.file, self.base, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)
        ]
