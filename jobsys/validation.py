"""Input checks the facades (JobSystem, BatchJobs) share: bad input becomes InvalidInput
with the field named, before anything reaches the database."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import pydantic

from jobsys import errors

Model = TypeVar("Model", bound=pydantic.BaseModel)


def as_uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    """`value` as a UUID; InvalidInput naming `what` (e.g. "job_id") when it is not one."""
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise errors.InvalidInput(f"{what} is not a valid id", {"field": what, "value": str(value)[:100]}) from None


def validated(model: type[Model], data: Any) -> Model:
    """`data` validated as `model`; InvalidInput listing every problem (no input echoed)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise errors.InvalidInput(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()),
            {"errors": exc.errors(include_url=False, include_context=False, include_input=False)},
        ) from None
