"""How backend exceptions map onto tenantctl's permanent and temporary errors (pure logic)."""

from __future__ import annotations

import hvac.exceptions
import pytest

from activities.common.errors import classify
from models.errors import NON_RETRYABLE_ERROR_TYPES, InvalidInput, TemporaryError


@pytest.mark.parametrize(
    "message",
    [
        "failed to persist entry: context canceled",  # a request in flight while OpenBao sealed (the fault suite)
        "Vault is sealed",
        "local node not active but active cluster node not found",
    ],
)
def test_vault_storage_and_seal_failures_answered_400_are_retried(message: str) -> None:
    mapped = classify(hvac.exceptions.InvalidRequest(message, errors=[message]), "create a token")
    assert isinstance(mapped, TemporaryError) and type(mapped).__name__ not in NON_RETRYABLE_ERROR_TYPES
    assert "create a token" in str(mapped) and message in str(mapped)


def test_a_request_vault_finds_wrong_is_permanent() -> None:
    message = "common name not allowed by this role"
    mapped = classify(hvac.exceptions.InvalidRequest(message, errors=[message]), "issue apiserver")
    assert isinstance(mapped, InvalidInput) and type(mapped).__name__ in NON_RETRYABLE_ERROR_TYPES
