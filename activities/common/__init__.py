"""What every backend's activities share: error translation, resumable waits, Kubernetes responses."""
