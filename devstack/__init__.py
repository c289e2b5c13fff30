"""Local development stack: emulators and supervisors for running tenantctl without real backends."""
