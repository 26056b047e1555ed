"""Ray Serve deployments (HTTP API, admin, metrics) and the ``herald`` command."""
