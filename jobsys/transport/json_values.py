"""Values as JSON, for the transports that speak HTTP (Supabase's PostgREST and the hub):
arguments on their way to a SQL function, and the hub's result rows on their way back."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any, Mapping

import pydantic

from jobsys import errors, rpc


def jsonable(value: Any) -> Any:
    """A value as JSON: PostgREST (or the hub) turns it back into the argument's SQL type."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    raise errors.InvalidInput(f"cannot send a {type(value).__name__} to the database")


def json_args(function: rpc.SqlFunction, args: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(args) - set(function.params)
    if unknown:  # PostgREST would answer PGRST202; say what is wrong instead
        raise errors.InvalidInput(f"unknown argument(s) for {function.name}: {sorted(unknown)}")
    return {name: jsonable(value) for name, value in args.items()}
