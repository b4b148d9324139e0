"""What agents' reports change in the conductor's records."""

import time

import pytest

from ferryman.common import exception
from flows import states


def _report_without(cloud, host, *gone):
    agent = cloud.agents[host].manager
    guests = [g for g in agent.driver.list_guests() if g['uuid'] not in gone]
    cloud.conductor.manager.report_host({}, host, agent.host_info(), guests)


def _used_memory(cloud, host):
    return cloud.db.hosts.get(host)['used']['memory_mb']


def test_vanished_guest_is_forgotten_after_the_grace_unless_migrating(cloud, guest,
                                                                      stuck):
    conf = cloud.conductor_conf
    gone = guest('compute1', 'local', memory_mb=512)
    moving = stuck()
    mig = cloud.api.live_migrate(moving['name'], host='compute2')
    deadline = time.time() + 30
    while cloud.api.get_migration(mig['id'])['status'] != states.RUNNING:
        assert time.time() < deadline
        time.sleep(0.01)
    conf.set_override('vanished_guest_grace', 1.0, group='conductor')
    try:
        used = _used_memory(cloud, 'compute1')
        _report_without(cloud, 'compute1', gone['uuid'], moving['uuid'])
        # One report is not enough: it may have been gathered before a change.
        assert cloud.db.instances.get(gone['uuid'])['host'] == 'compute1'
        time.sleep(1.1)
        _report_without(cloud, 'compute1', gone['uuid'], moving['uuid'])
        with pytest.raises(exception.InstanceNotFound):
            cloud.db.instances.get(gone['uuid'])
        assert cloud.db.allocations.list(gone['uuid']) == []
        assert _used_memory(cloud, 'compute1') == used - 512
        # The guest in a migration keeps its record and its claims.
        assert cloud.db.instances.get(moving['uuid'])['migration_id'] == mig['id']
    finally:
        conf.clear_override('vanished_guest_grace', group='conductor')
        cloud.api.abort_migration(mig['id'])
        cloud.wait(mig['id'])
        cloud.refresh()
    assert cloud.api.get_migration(mig['id'])['status'] == states.CANCELLED


def test_a_guest_seen_again_is_kept(cloud, guest):
    conf = cloud.conductor_conf
    g = guest('compute2', 'local')
    conf.set_override('vanished_guest_grace', 1.0, group='conductor')
    try:
        _report_without(cloud, 'compute2', g['uuid'])
        time.sleep(0.6)
        cloud.refresh()  # there after all (a stale report had lacked it)
        time.sleep(0.6)
        _report_without(cloud, 'compute2', g['uuid'])
        assert cloud.db.instances.get(g['uuid'])['host'] == 'compute2'
    finally:
        conf.clear_override('vanished_guest_grace', group='conductor')


def test_a_guests_owner_is_recorded_and_moves_with_it(cloud, guest):
    owned = guest('compute1', 'local', project_id='p-1', user_id='u@example')
    unowned = guest('compute1', 'local')
    record = cloud.db.instances.get(owned['uuid'])
    assert (record['project_id'], record['user_id']) == ('p-1', 'u@example')
    record = cloud.db.instances.get(unowned['uuid'])
    assert (record['project_id'], record['user_id']) == (None, None)
    mig = cloud.api.live_migrate(owned['uuid'], host='compute2')
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED
    cloud.refresh()
    record = cloud.db.instances.get(owned['uuid'])
    assert (record['host'], record['project_id'], record['user_id']) == (
        'compute2', 'p-1', 'u@example')


@pytest.mark.parametrize('field, value', [('project_id', 'p 1'),
                                          ('user_id', 'x' * 65),
                                          ('project_id', 42)])
def test_a_report_with_a_bad_owner_is_refused_naming_it(cloud, guest, field, value):
    g = guest('compute1', 'local', project_id='p1', user_id='u1')
    agent = cloud.agents['compute1'].manager
    guests = [dict(x, **{field: value}) if x['uuid'] == g['uuid'] else x
              for x in agent.driver.list_guests()]
    with pytest.raises(exception.InvalidArgument) as raised:
        cloud.conductor.manager.report_host({}, 'compute1', agent.host_info(), guests)
    assert field in str(raised.value)
    record = cloud.db.instances.get(g['uuid'])
    assert (record['project_id'], record['user_id']) == ('p1', 'u1')
