"""Common base for every model: strict about unknown fields so a typo in a spec is an error, not a no-op."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """Base of all tenantctl models: unknown fields are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class FrozenModel(BaseModel):
    """Immutable value object (inputs, results, records)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
