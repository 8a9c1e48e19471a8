"""The shared runtime of every shopmesh service, written once, in packages by job.

    kernel/    plain Python any layer may import, domain code included (errors, money, clock,
               paging, validate, aio, deadline): no gRPC, no SQLAlchemy
    settings   the one settings object
    rpc/       gRPC's conventions on both sides: status (the one status model), softerrors,
               identity, protoconv, tls
    observe/   logs, metrics, telemetry
    client/    discovery, channels, breaker
    data/      db, migrate (+ migrations/)
    server/    bootstrap (App, create_server, main), guard, lifecycle, workers, reflection, http
    tools/     not runtime: the local launcher, free ports, test-only fault injection

Each imports only those listed above it (pyproject.toml's import-linter contracts say so and
the suite checks it); no package here imports a service or the gateway.
"""
