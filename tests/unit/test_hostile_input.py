"""What the broker delivers is checked before anything acts on it: reports and
the arguments of every conductor and agent RPC method. A bad one is refused
naming the field and value and changes nothing; a report speaks only for its
own host; a stored value that cannot be interpreted is an audit violation,
never an exception out of a listing, the scheduler or the CLI."""

import copy
import logging
import time

import pytest
import sqlalchemy as sa

from conductor.db import models
from conductor.db import rows
from ferryman.common import exception
from ferryman.common import rpc
from ferryman.common import schemas
from ferryman.cmd import cli
from flows import states

UUID = '0b5e6a5a-6b0a-4c51-8d2c-3f1b2a9e0c11'


def _state(cloud):
    """Every row a report or an RPC method could change, as plain dicts."""
    with cloud.db.session() as s:
        return {table.__tablename__: sorted(
            (rows.to_dict(row) for row in s.scalars(sa.select(table))),
            key=repr) for table in (models.Host, models.Instance, models.Allocation,
                                    models.Provider, models.NestedAllocation,
                                    models.Migration, models.Drain)}


def _report(cloud, host):
    agent = cloud.agents[host].manager
    return agent.host_info(), agent.driver.list_guests()


def _mutate(path, value):
    """A function that sets ``path`` (keys and indexes) of a report to ``value``."""
    def apply(report):
        target = report
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


BAD_REPORTS = [
    # (field named in the error, the value shown, how the report is spoiled)
    ('info.reserved.vcpus', "'lots'", _mutate(['info', 'reserved', 'vcpus'], 'lots')),
    ('info.vcpus', '-4', _mutate(['info', 'vcpus'], -4)),
    ('info.memory_mb', str(2 ** 40), _mutate(['info', 'memory_mb'], 2 ** 40)),
    ('info.allocation_ratios.memory_mb', '0',
     _mutate(['info', 'allocation_ratios', 'memory_mb'], 0)),
    ('info.features.bandwidth_mibps', 'nan',
     _mutate(['info', 'features', 'bandwidth_mibps'], float('nan'))),
    ('info.cpu_features[0]', "'vmx\\n'", _mutate(['info', 'cpu_features', 0],
                                                 'vmx\n')),
    ('info.instances_path', "'relative/path'",
     _mutate(['info', 'instances_path'], 'relative/path')),
    ('info.evil', "'yes'", _mutate(['info', 'evil'], 'yes')),
    ('info.numa_cells[0].vcpus', "'x'",
     _mutate(['info', 'numa_cells'], [{'id': 0, 'vcpus': 'x', 'memory_mb': 1}])),
    ('info.pci_devices[0].address', "'../../x'",
     _mutate(['info', 'pci_devices'], [{'address': '../../x', 'count': 1,
                                        'traits': []}])),
    ('guests', "{'a': 1}", _mutate(['guests'], {'a': 1})),
    ('guests[0].uuid', "'../../etc'", _mutate(['guests', 0, 'uuid'], '../../etc')),
    ('guests[0].name', "'evil\\x1b[31m'", _mutate(['guests', 0, 'name'],
                                                  'evil\x1b[31m')),
    ('guests[0].name', "'xxxxxxxxxx", _mutate(['guests', 0, 'name'], 'x' * 100000)),
    ('guests[0].power_state', "'hacked'", _mutate(['guests', 0, 'power_state'],
                                                  'hacked')),
    ('guests[0].vcpus', 'True', _mutate(['guests', 0, 'vcpus'], True)),
    ('guests[0].memory_mb', "'1024'", _mutate(['guests', 0, 'memory_mb'], '1024')),
    ('guests[0].extra', '1', _mutate(['guests', 0, 'extra'], 1)),
    ('guests[0].disks[0].size_gb', '-1', _mutate(['guests', 0, 'disks', 0,
                                                  'size_gb'], -1)),
    ('guests[0].volumes[0]', "'../../dev/sda'",
     _mutate(['guests', 0, 'volumes'], ['../../dev/sda'])),
    ('guests[0].sla_class', "'vip'", _mutate(['guests', 0, 'sla_class'], 'vip')),
]


@pytest.mark.parametrize('field, shown, spoil', BAD_REPORTS,
                         ids=[b[0] + '=' + b[1][:12] for b in BAD_REPORTS])
def test_a_bad_report_is_refused_logged_and_changes_nothing(cloud, guest, caplog,
                                                            field, shown, spoil):
    g = guest('compute2', 'local')
    info, guests = _report(cloud, 'compute2')
    report = {'info': copy.deepcopy(info),
              'guests': [copy.deepcopy(x) for x in guests if x['uuid'] == g['uuid']]}
    spoil(report)
    before = _state(cloud)
    with caplog.at_level(logging.WARNING), \
            pytest.raises(exception.InvalidArgument) as err:
        cloud.conductor.manager.report_host({}, 'compute2', report['info'],
                                            report['guests'])
    assert field in str(err.value) and shown in str(err.value), err.value
    assert _state(cloud) == before
    refusals = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and field in r.getMessage()]
    assert refusals, caplog.text
    assert shown in refusals[0], refusals[0]
    assert len(refusals[0]) < 2000  # a huge value is shown cut short


@pytest.mark.parametrize('host', ['compute2/../x', 'compute2\n', '', 'x' * 300,
                                  '<h>', 42, None])
def test_a_report_for_a_bad_host_name_is_refused(cloud, caplog, host):
    info, guests = _report(cloud, 'compute2')
    before = _state(cloud)
    with caplog.at_level(logging.WARNING), \
            pytest.raises(exception.InvalidArgument):
        cloud.conductor.manager.report_host({}, host, info, guests)
    assert _state(cloud) == before
    assert any('host' in r.getMessage() and repr(host)[:50] in r.getMessage()
               for r in caplog.records if r.levelno >= logging.WARNING), caplog.text


def test_the_agents_own_reports_pass_the_conductors_checks(cloud, guest, caplog):
    guest('compute1', 'local')
    guest('compute3', 'volume')
    with caplog.at_level(logging.WARNING):
        for host in cloud.agents:
            cloud.conductor.manager.report_host({}, host, *_report(cloud, host))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        caplog.text


def test_a_report_never_rewrites_another_hosts_guest(cloud, guest, caplog):
    g = guest('compute1', 'local', memory_mb=512)
    before = _state(cloud)
    info, guests = _report(cloud, 'compute2')
    forged = dict(cloud.agents['compute1'].manager.driver.get_guest(g['uuid']),
                  name='evil', power_state='shutoff', vcpus=64, memory_mb=99999)
    with caplog.at_level(logging.WARNING):
        cloud.conductor.manager.report_host({}, 'compute2', info, guests + [forged])
    after = _state(cloud)
    assert after['ferryman_instances'] == before['ferryman_instances']
    assert after['ferryman_allocations'] == before['ferryman_allocations']
    assert cloud.db.instances.get(g['uuid'])['host'] == 'compute1'
    assert any(g['uuid'] in r.getMessage() and 'compute1' in r.getMessage()
               for r in caplog.records if r.levelno >= logging.WARNING), caplog.text


def test_a_guest_migrating_to_the_host_is_reported_without_rewriting_it(
        cloud, stuck, caplog):
    g = stuck()
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    try:
        deadline = time.time() + 30
        while cloud.api.get_migration(mig['id'])['status'] != states.RUNNING:
            assert time.time() < deadline
            time.sleep(0.01)
        before = cloud.db.instances.get(g['uuid'])
        info, guests = _report(cloud, 'compute2')
        arriving = dict(cloud.agents['compute1'].manager.driver.get_guest(
            g['uuid']), name='renamed', power_state='paused')
        with caplog.at_level(logging.WARNING):
            cloud.conductor.manager.report_host({}, 'compute2', info,
                                                guests + [arriving])
        assert cloud.db.instances.get(g['uuid']) == before
        # Expected (the conductor knows the migration): nothing to warn about.
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and
                    g['uuid'] in r.getMessage()], caplog.text
    finally:
        cloud.api.abort_migration(mig['id'])
        cloud.wait(mig['id'])
        cloud.refresh()


def test_an_uninterpretable_host_record_is_a_violation_not_an_error(
        cloud, guest, cli_conf, capsys):
    g = guest('compute1', 'local')
    with cloud.db.session.begin() as s:
        # What a forged report stored before reports were checked.
        s.get(models.Host, 'compute3').reserved = {'vcpus': 'lots'}
    try:
        hosts = {h['name']: h for h in cloud.api.list_hosts()}
        assert hosts['compute1']['problems'] == []
        assert any('reserved.vcpus' in p and "'lots'" in p
                   for p in hosts['compute3']['problems']), hosts['compute3']
        with pytest.raises(exception.HostUnavailable) as err:
            cloud.api.live_migrate(g['name'], host='compute3')
        assert 'record' in str(err.value) and 'lots' in str(err.value)
        # Scheduling goes on around it.
        mig = cloud.wait(cloud.api.live_migrate(g['name'])['id'])
        assert (mig['status'], mig['destination']) == (states.COMPLETED, 'compute2')
        texts = [v['text'] for v in cloud.api.audit()['violations']
                 if v['kind'] == 'record']
        assert any('compute3' in t and 'reserved.vcpus' in t and "'lots'" in t
                   for t in texts), texts
        capsys.readouterr()
        assert cli.main(['host', 'list', '--config-file', cli_conf]) == 0
        out = capsys.readouterr()
        assert 'compute3' in out.out and 'lots' in out.out + out.err
        assert 'Traceback' not in out.out + out.err
    finally:
        cloud.refresh()
    assert {h['name']: h['problems'] for h in cloud.api.list_hosts()}[
        'compute3'] == []


def test_an_uninterpretable_guest_record_is_a_violation_not_an_error(cloud, guest):
    g = guest('compute1', 'local')
    with cloud.db.session.begin() as s:
        s.execute(sa.text("UPDATE ferryman_instances SET vcpus = 'many', "
                          "numa_topology = '[{\"vcpus\": \"x\"}]' WHERE uuid = :u"),
                  {'u': g['uuid']})
    try:
        assert g['uuid'] in {i['uuid'] for i in cloud.api.list_instances()}
        cloud.api.list_hosts()
        with pytest.raises(exception.RecordUnreadable) as err:
            cloud.api.live_migrate(g['name'])
        assert 'vcpus' in str(err.value) and "'many'" in str(err.value)
        texts = [v['text'] for v in cloud.api.audit()['violations']
                 if v['kind'] == 'record']
        assert any(g['uuid'] in t and "'many'" in t for t in texts), texts
    finally:
        with cloud.db.session.begin() as s:
            s.execute(sa.text("UPDATE ferryman_instances SET vcpus = 1, "
                              "numa_topology = NULL WHERE uuid = :u"),
                      {'u': g['uuid']})


CONDUCTOR_CALLS = [
    # (method, arguments, the field the error names)
    ('set_host_enabled', {'host': 'compute1', 'enabled': False,
                          'reason': 'x\x1b[2J'}, 'reason'),
    ('set_host_enabled', {'host': 'compute1', 'enabled': False,
                          'reason': 'r' * 100000}, 'reason'),
    ('set_host_enabled', {'host': 'compute1', 'enabled': 'no'}, 'enabled'),
    ('list_instances', {'host': 'compute1\n'}, 'host'),
    ('list_drains', {'host': 'compute1', 'evil': 1}, 'evil'),
    ('list_migrations', {'status': 'running', 'host': '../x'}, 'host'),
    ('live_migrate', {'instance': 'g\x00', 'host': 'compute2'}, 'instance'),
    ('live_migrate', {'instance': 'g', 'force': 'yes'}, 'force'),
    ('live_migrate', {'instance': 'g', 'importance': 'urgent'}, 'importance'),
    ('live_migrate', {'instance': 'g', 'drain_slot': {}}, 'drain_slot'),
    ('drain_host', {'host': 'compute1', 'max_parallel': '2'}, 'max_parallel'),
    ('get_migration', {'migration': 'm' * 5000}, 'migration'),
    ('abort_migration', {'migration': UUID, 'now': True}, 'now'),
    ('get_drain', {'drain': ['x']}, 'drain'),
    ('audit', {'deep': True}, 'deep'),
    ('report_host', {'host': 'compute1', 'info': {}, 'guests': [],
                     'extra': 1}, 'extra'),
]


@pytest.mark.parametrize('method, kwargs, field', CONDUCTOR_CALLS,
                         ids=['%s-%s' % (c[0], c[2]) for c in CONDUCTOR_CALLS])
def test_the_conductor_refuses_bad_arguments_over_rpc(cloud, method, kwargs, field):
    before = _state(cloud)
    client = cloud.api.client.prepare(version='1.3')
    if method == 'report_host':
        # A cast: refused where it lands, nothing to answer.
        client.cast({}, method, **kwargs)
        cloud.api.list_hosts()  # the cast is handled by now (one worker)
    else:
        signer, principal = cloud.api.operator  # past authentication
        with pytest.raises(exception.InvalidArgument) as err:
            client.call(signer.context(rpc.CONDUCTOR_TOPIC, method, principal,
                                       kwargs), method, **kwargs)
        message = str(err.value).splitlines()[0]
        assert field in message, message
        assert len(message) < 2000
    assert _state(cloud) == before


AGENT_CALLS = [
    ('delete_local_disks', {'guest': {'uuid': '../../etc'}}, 'guest.uuid'),
    ('create_local_disks', {'guest': {'uuid': UUID, 'disks': [
        {'name': '../x', 'size_gb': 1, 'format': 'qcow2'}]}}, 'guest.disks[0].name'),
    ('connect_volumes', {'guest': {'uuid': UUID, 'volumes': ['a/../../b']}},
     'guest.volumes[0]'),
    ('start_migration', {'guest': {'uuid': UUID}, 'destination': 'evil/host',
                         'subtype': 'block', 'params': {}}, 'destination'),
    ('start_migration', {'guest': {'uuid': UUID}, 'destination': 'compute2',
                         'subtype': 'block', 'params': {'evil': 1}}, 'params.evil'),
    ('set_max_downtime', {'uuid': UUID, 'downtime_ms': 'lots'}, 'downtime_ms'),
    ('check_source', {'uuid': UUID, 'probe': '../../x'}, 'probe'),
    ('check_destination', {'guest': {'uuid': UUID, 'memory_mb': -1},
                           'source_info': {'hypervisor_type': 'fake',
                                           'cpu_model': None, 'cpu_features': []},
                           'probe': 'ab' * 16},
     'guest.memory_mb'),
    ('get_migration_job', {'uuid': 'x;rm -rf'}, 'uuid'),
    ('abort_migration', {'uuid': UUID, 'evil': 1}, 'evil'),
    ('post_migration_source', {'guest': {'uuid': UUID}, 'subtype': 'all'},
     'subtype'),
]


@pytest.mark.parametrize('method, kwargs, field', AGENT_CALLS,
                         ids=['%s-%s' % (c[0], c[2]) for c in AGENT_CALLS])
def test_the_agent_refuses_bad_arguments_before_its_driver_acts(
        cloud, monkeypatch, method, kwargs, field):
    agent = cloud.agents['compute1'].manager
    calls = []
    monkeypatch.setattr(agent.driver, method,
                        lambda *a, **k: calls.append((a, k)), raising=False)
    with pytest.raises(exception.InvalidArgument) as err:
        getattr(agent, method)({}, **kwargs)
    assert field in str(err.value), str(err.value)
    assert calls == []


class _Failing(object):
    def __init__(self, exc):
        self.exc = exc

    def list_hosts(self):
        raise self.exc


@pytest.mark.parametrize('as_json', [False, True])
def test_the_cli_prints_no_traceback_for_an_unexpected_error(monkeypatch, capsys,
                                                             as_json):
    import oslo_messaging
    error = oslo_messaging.RemoteError(
        'ValueError', "invalid literal for int() with base 10: 'lots'",
        'Traceback (most recent call last):\n  File "x", line 1\nValueError')
    monkeypatch.setattr(cli, '_api', lambda args: _Failing(error))
    rc = cli.main(['host', 'list'] + (['--json'] if as_json else []))
    out = capsys.readouterr()
    assert rc not in (0, None)
    assert 'Traceback' not in out.out + out.err
    assert "'lots'" in out.out + out.err


@pytest.mark.parametrize('bad', ['\x9b31m', '\x85', '\ud800', '\u202e', '\u2066'])
def test_free_text_refuses_every_control_character(bad):
    """C1 controls (\\x9b opens a terminal escape), lone surrogates (no UTF-8,
    so no database, holds one) and bidirectional overrides, as C0 ones are."""
    for method, args, field in [
            ('set_host_enabled', {'host': 'h', 'enabled': True,
                                  'reason': 'a%sb' % bad}, 'reason'),
            ('check_destination', {'guest': {'uuid': UUID}, 'probe': 'ab' * 16,
                                   'source_info': {'hypervisor_type': 'fake',
                                                   'cpu_model': bad,
                                                   'cpu_features': []}},
             'source_info.cpu_model')]:
        service = schemas.CONDUCTOR_SERVICE if method == 'set_host_enabled' else \
            schemas.AGENT_SERVICE
        with pytest.raises(exception.InvalidArgument) as err:
            schemas.check(service, method, args)
        assert str(err.value).startswith('Invalid value %r for %s' % (
            args.get('reason', bad), field)), err.value
    schemas.check(schemas.CONDUCTOR_SERVICE, 'set_host_enabled',
                  {'host': 'h', 'enabled': True, 'reason': 'caf\xe9 <ok> & /x?y'})


@pytest.mark.parametrize('key', ['x\ny', '\x1b[2J', 'k' * 300, 'a.b', '0'])
def test_a_made_up_key_is_shown_as_a_value_is(key):
    with pytest.raises(exception.InvalidArgument) as err:
        schemas.check(schemas.CONDUCTOR_SERVICE, 'list_hosts', {key: 1})
    message = str(err.value)
    assert schemas.shown(key) in message, message
    assert not any(c in message for c in '\n\x1b'), message
    assert len(message) < 400, message


@pytest.mark.parametrize('name', ['ctxt', 'self'])
def test_arguments_named_like_the_methods_own_are_unknown_fields(cloud, name):
    with pytest.raises(exception.InvalidArgument) as err:
        cloud.conductor.manager.get_drain({}, drain='d1', **{name: 1})
    assert str(err.value).startswith('Invalid value 1 for %s: unknown field' % name)
    with pytest.raises(exception.InvalidArgument) as err:
        cloud.agents['compute1'].manager.abort_migration({}, uuid=UUID, **{name: 1})
    assert str(err.value).startswith('Invalid value 1 for %s: unknown field' % name)
