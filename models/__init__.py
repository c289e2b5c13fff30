"""Domain models of tenantctl: pure pydantic data that crosses workflow, activity and CLI boundaries.

Nothing in this package does I/O; workflows import it freely (an import-linter contract enforces it).
"""
