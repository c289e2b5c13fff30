"""Provider-neutral node bootstrap: cloud-config, ports, node certificates, node names and versions."""
