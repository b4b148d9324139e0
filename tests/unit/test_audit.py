"""ferryman audit on a cloud of its own (the shared one keeps what other tests
leave on purpose, such as migrations in error)."""

import os

import pytest

from conductor.db import models
from ferryman import local
from flows import states


@pytest.fixture(scope='module')
def cloud():
    with local.LocalCloud() as c:
        yield c


def test_audit_is_clean_after_migrations_and_finds_violations(cloud, guest):
    assert cloud.api.audit()['violations'] == []
    g = guest('compute1', 'local')
    assert cloud.wait(cloud.api.live_migrate(g['name'], host='compute2')['id'])[
        'status'] == states.COMPLETED
    report = cloud.api.audit()
    assert report['violations'] == [], report
    assert report['hosts'] == 3
    # A guest on two hosts, a leaked claim, a leftover directory: all reported.
    with cloud.cloud.editing('compute3') as state:
        state['guests'][g['uuid']] = dict(state.get('guests', {}).get(g['uuid'], {}),
                                          power_state='running')
    os.makedirs(os.path.join(cloud.cloud.load('compute1')['info']['instances_path'],
                             g['uuid']))
    with cloud.db.session.begin() as s:
        s.add(models.Allocation(consumer='0' * 36, host='compute1', vcpus=1,
                                memory_mb=64, disk_gb=0))
    kinds = sorted({v['kind'] for v in cloud.api.audit()['violations']})
    texts = ' | '.join(v['text'] for v in cloud.api.audit()['violations'])
    assert kinds == ['allocation', 'guest', 'leftover'], texts
    assert 'runs on 2 hosts' in texts and 'leaked claim' in texts
    assert 'instance directory of %s on compute1' % g['uuid'] in texts
    # Put things right again for the tests after this one.
    with cloud.cloud.editing('compute3') as state:
        del state['guests'][g['uuid']]
    os.rmdir(os.path.join(cloud.cloud.load('compute1')['info']['instances_path'],
                          g['uuid']))
    with cloud.db.session.begin() as s:
        s.query(models.Allocation).filter_by(consumer='0' * 36).delete()
    assert cloud.api.audit()['violations'] == []
