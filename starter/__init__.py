"""The tenantctl command line: starts and inspects workflows."""
