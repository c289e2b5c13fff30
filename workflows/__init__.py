"""Temporal workflows of tenantctl: pure runbooks that import temporalio, the stdlib and ``models`` only."""
