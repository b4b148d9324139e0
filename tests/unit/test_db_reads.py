"""The conductor database's cheaper reads answer as the full ones do."""

import pytest
import sqlalchemy as sa

from conductor.db import api as db_api
from conductor.db import models
from conductor.db import reports
from conductor.db import rows
from ferryman.common import exception
from ferryman.common import vocabulary as vocab


def test_hosts_read_together_equal_each_read_alone(cloud):
    cloud.refresh()
    names = ['compute3', 'compute1']
    together = cloud.db.hosts.get_many(names + ['no-such-host'])
    assert sorted(together) == sorted(names)
    for name in names:
        alone = cloud.db.hosts.get(name)
        assert together[name] == alone


def test_host_facts_are_the_reported_rows_in_one_query(cloud):
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)
    sa.event.listen(cloud.db.engine, 'before_cursor_execute', count)
    try:
        facts = cloud.db.hosts.facts('compute1', 'compute2')
    finally:
        sa.event.remove(cloud.db.engine, 'before_cursor_execute', count)
    assert len(statements) == 1
    for name in ('compute1', 'compute2'):
        full = cloud.db.hosts.get(name)
        assert facts[name] == {k: full[k] for k in facts[name]}
        assert facts[name]['features'] == full['features']
        assert facts[name]['instances_path'] == full['instances_path']


def test_host_facts_name_an_unknown_host(cloud):
    with pytest.raises(exception.HostNotFound, match='nowhere'):
        cloud.db.hosts.facts('compute1', 'nowhere')


def test_a_first_report_that_lost_a_race_is_applied_over_the_winner(
        cloud, tmp_path, monkeypatch):
    """Two first reports of one host (an agent's cast, a second RPC worker):
    the loser's insert fails on the name; it is applied over the winner's."""
    db = db_api.Database('sqlite:///%s' % (tmp_path / 'race.sqlite'))
    db.upgrade()
    agent = cloud.agents['compute1']
    info = agent.manager.host_info()
    real = reports.Reports._record
    calls = []

    def racing(self, name, info, guests, vanish_after):
        calls.append(name)
        if len(calls) == 1:
            # The winner lands first, then this report's insert collides.
            real(self, name, dict(info, cpu_model='winner'), guests, vanish_after)
            with self.session.begin() as s:
                s.execute(sa.insert(models.Host).values(
                    name=name, enabled=True))
        return real(self, name, info, guests, vanish_after)
    monkeypatch.setattr(reports.Reports, '_record', racing)
    db.reports.record('compute1', info, [])
    assert len(calls) == 2
    assert db.hosts.get('compute1')['cpu_model'] == info['cpu_model']


def test_a_migration_read_equals_its_orm_row(cloud, guest):
    g = guest(host='compute2')
    mig = cloud.api.live_migrate(g['name'], host='compute3')
    cloud.wait(mig['id'])
    with cloud.db.session() as s:
        orm = rows.to_dict(s.get(models.Migration, mig['id']))
    read = cloud.db.migrations.get(mig['id'])
    assert read == orm
    assert read['switchover_at'].endswith('Z') and read['stats'] == orm['stats']
    with pytest.raises(exception.MigrationNotFound, match='no-such-migration'):
        cloud.db.migrations.get('no-such-migration')


def test_every_state_and_subtype_fits_its_column():
    # PostgreSQL refuses a longer value (sqlite stores it): a new state name
    # must fit, or its migration fails there at that state.
    status = models.Migration.__table__.c.status.type.length
    subtype = models.Migration.__table__.c.subtype.type.length
    assert [s for s in vocab.TERMINAL + vocab.ACTIVE if len(s) > status] == []
    assert [s for s in vocab.SUBTYPES if len(s) > subtype] == []


def test_refused_requests_table_is_what_alembic_creates(tmp_path):
    # The model and its revision (0010) agree: alembic finds nothing to change.
    from alembic import autogenerate
    from alembic import migration
    db = db_api.Database('sqlite:///%s/f.sqlite' % tmp_path)
    db.upgrade()
    try:
        with db.engine.connect() as conn:
            diff = autogenerate.compare_metadata(
                migration.MigrationContext.configure(conn), models.Base.metadata)
        assert [d for d in diff if 'ferryman_refused_requests' in repr(d)] == []
        db.refusals.add('req-1', 'u1', 'live-migration', None, 'no room')
        assert [(r['request_id'], r['host'], r['error'])
                for r in db.refusals.list('u1')] == [('req-1', None, 'no room')]
        assert db.refusals.list('u2') == []
    finally:
        db.engine.dispose()
