"""Activities a fleet rollout uses to ask cluster entities for operations (Temporal client only)."""
