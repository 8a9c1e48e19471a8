"""Alembic's environment for every service: run on the connection mesh.data.migrate hands over.

Each service keeps its own revisions in `<service>/migrations/` (its own database,
its own history); this file and the revision template are shared.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=config.attributes["metadata"],
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():  # inside the caller's transaction: one commit for all of it
    context.run_migrations()
