"""Serving: a service's process from start to stop.

bootstrap (App, create_server, main) · guard (the per-call hooks) · lifecycle (the one shutdown path)
· workers (SHOPMESH_WORKERS) · reflection · http (the HTTP/1.1 server: the gateway's and /metrics).
"""
