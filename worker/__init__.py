"""The tenantctl worker: the only place that builds backend clients from settings."""
