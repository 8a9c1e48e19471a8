"""Observability: logs, Prometheus metrics, OpenTelemetry traces.
"""
