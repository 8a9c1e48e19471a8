"""The REST gateway: JSON over HTTP/1.1 in, gRPC out, routes built from the contracts' google.api.http rules."""
