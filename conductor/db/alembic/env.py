from alembic import context

from conductor.db import models

config = context.config


def run_online():
    connectable = config.attributes['connection']
    context.configure(connection=connectable, target_metadata=models.Base.metadata,
                      version_table='ferryman_alembic_version',
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_online()
