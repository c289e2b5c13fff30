"""A tenant cluster's own Kubernetes API, as its administrator (activities ``tenant.*``)."""
