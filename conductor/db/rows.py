"""Rows as plain dicts (JSON types), and the clock they are stamped with.

The database's readers return these, never ORM objects, so results can go straight
into RPC replies and TaskFlow storage.
"""

import datetime


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def later(now, seconds):
    return None if seconds is None else now + datetime.timedelta(seconds=seconds)


def _value(value):
    return value.isoformat() + 'Z' if isinstance(value, datetime.datetime) else value


def to_dict(row):
    """An ORM object as a dict of its columns."""
    return {column.name: _value(getattr(row, column.name))
            for column in row.__table__.columns}


def row_dict(row):
    """A Core row as to_dict gives its ORM object."""
    return {key: _value(value) for key, value in row._mapping.items()}
