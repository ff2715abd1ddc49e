"""Alembic environment: uses the caller's connection when given (vms.store.db.upgrade), else the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from vms.store.models import Base, described_by_models

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            include_name=described_by_models,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(
            connection=conn, target_metadata=target_metadata, render_as_batch=True, include_name=described_by_models
        )
        with context.begin_transaction():
            context.run_migrations()


run()
