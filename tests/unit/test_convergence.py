"""The policy steering real flows on the simulator, through the conductor's API."""

import time

import pytest

from ferryman.common import exception
from flows import states


def _decisions(cloud, mig_id):
    return [e['details'] for e in cloud.api.get_task_history(mig_id)
            if e['state'] == 'DECISION']


def _until(cloud, mig_id, wanted, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        mig = cloud.api.get_migration(mig_id)
        if mig['status'] in wanted:
            return mig
        time.sleep(0.01)
    raise AssertionError('%s never reached %s: %s' % (mig_id, wanted, mig))


def test_non_converging_guest_completes_by_post_copy(cloud, guest):
    g = guest('compute1', 'local', memory_mb=4096, dirty_rate_mibps=3000.0)
    mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}
    decided = _decisions(cloud, mig['id'])
    assert [d['action'] for d in decided] == ['post-copy']
    assert 'MiB/s' in decided[0]['why']
    assert mig['stats']['downtime_ms'] <= 100  # post-copy's switch, not a pause
    assert cloud.cloud.read_disk('compute2', g['uuid']) == 'data of %s' % g['name']


def test_post_copy_cannot_be_aborted_and_completes(cloud, guest, real_time):
    g = guest('compute1', 'local', memory_mb=4096, dirty_rate_mibps=3000.0)
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    seen = _until(cloud, mig['id'], (states.POST_COPY,))
    assert seen['last_known_host'] == 'compute2'
    assert cloud.db.instances.get(g['uuid'])['host'] == 'compute2'
    with pytest.raises(exception.CannotAbort) as err:
        cloud.api.abort_migration(mig['id'])
    assert 'compute2' in str(err.value)
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED


def test_aborts_cleanly_where_nothing_may_finish_it(cloud, stuck):
    cloud.conductor_conf.set_override('completion_timeout_per_gib', 1.0,
                                      group='policy')
    try:
        g = stuck()
        mig = cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])
    finally:
        cloud.conductor_conf.clear_override('completion_timeout_per_gib',
                                            group='policy')
    assert mig['status'] == states.FAILED
    assert 'policy abort' in mig['error']
    assert cloud.cloud.find_guest(g['uuid']) == {'compute1': 'running'}
    assert cloud.cloud.leftovers('compute2', g['uuid']) == []
    assert [d['action'] for d in _decisions(cloud, mig['id'])][-1] == 'abort'


def test_force_complete_pauses_when_post_copy_is_forbidden(cloud, stuck):
    g = stuck()
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    _until(cloud, mig['id'], (states.RUNNING,))
    cloud.api.force_complete_migration(mig['id'])
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED, mig['error']
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}
    actions = [d['action'] for d in _decisions(cloud, mig['id'])]
    assert actions[-1] == 'pause'
    with pytest.raises(exception.CannotForceComplete):
        cloud.api.force_complete_migration(mig['id'])


def test_force_complete_before_the_copy_applies_at_once(cloud, guest, real_time):
    g = guest('compute1', 'local', memory_mb=2048, dirty_rate_mibps=10.0)
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    cloud.api.force_complete_migration(mig['id'])  # still accepted or preparing
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED
    assert [d['action'] for d in _decisions(cloud, mig['id'])] == ['post-copy']


def test_force_complete_while_preparing_applies_when_the_copy_starts(
        cloud, guest, real_time):
    g = guest('compute1', 'local', memory_mb=2048, dirty_rate_mibps=10.0)
    cloud.cloud.inject_fault('compute2', 'plug_networking', times=1, delay_s=1.0)
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    deadline = time.time() + 30
    while {e['atom']: e['state'] for e in cloud.api.get_task_history(mig['id'])
           }.get('plug-networking') != 'RUNNING':
        assert time.time() < deadline, cloud.api.get_task_history(mig['id'])
        time.sleep(0.01)
    assert cloud.api.get_migration(mig['id'])['status'] == states.PREPARING
    cloud.api.force_complete_migration(mig['id'])
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.COMPLETED
    assert [d['action'] for d in _decisions(cloud, mig['id'])] == ['post-copy']
    assert cloud.cloud.find_guest(g['uuid']) == {'compute2': 'running'}


def test_bad_importance_is_refused(cloud, guest):
    g = guest('compute1', 'local')
    with pytest.raises(exception.InvalidArgument) as err:
        cloud.api.live_migrate(g['name'], host='compute2', importance='urgent')
    assert 'urgent' in str(err.value)
