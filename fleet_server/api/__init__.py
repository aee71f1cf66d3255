"""HTTP API (/api/v1) and /metrics. Routes are thin: parse, call a service, shape."""
