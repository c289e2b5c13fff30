"""Settings of the worker and the CLI (pydantic-settings, env prefix ``TENANTCTL_``)."""
