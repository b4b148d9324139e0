"""The database engine, and the schema's upgrade by alembic."""

import os

import alembic.command
import alembic.config
import sqlalchemy as sa

SCRIPT_LOCATION = os.path.join(os.path.dirname(__file__), 'alembic')


def _sqlite_pragmas(dbapi_conn, _record):
    cursor = dbapi_conn.cursor()
    # WAL lets the engines' readers go on while one writer commits.
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA synchronous=NORMAL')
    cursor.close()


def create(url):
    kwargs = {}
    if url.startswith('sqlite'):
        kwargs['connect_args'] = {'timeout': 30, 'check_same_thread': False}
        path = sa.engine.make_url(url).database
        if path and path != ':memory:':
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith('sqlite'):
        sa.event.listen(engine, 'connect', _sqlite_pragmas)
    return engine


def upgrade(engine):
    """Bring the schema to alembic's head revision."""
    cfg = alembic.config.Config()
    cfg.set_main_option('script_location', SCRIPT_LOCATION)
    with engine.begin() as connection:
        cfg.attributes['connection'] = connection
        alembic.command.upgrade(cfg, 'head')
