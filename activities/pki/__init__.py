"""The clusters' PKI in Vault (activities ``pki.*``) and their rotation schedules (``schedule.*``)."""
