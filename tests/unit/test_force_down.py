"""An operator forces a host down (Nova's os-services forced_down): it counts as
down everywhere, until undone, whatever its agent reports."""

import json

import pytest

from ferryman.cmd import cli
from ferryman.common import exception


@pytest.fixture
def forced(cloud):
    """force(host): force a host down for the test; undone after it."""
    names = []
    cloud.refresh()

    def force(name):
        names.append(name)
        return cloud.api.force_down(name, True)
    yield force
    for name in names:
        cloud.api.force_down(name, False)


def _hosts(cloud):
    return {h['name']: (h['up'], h['forced_down']) for h in cloud.api.list_hosts()}


def test_a_forced_down_host_is_down_until_undone(cloud, forced):
    assert _hosts(cloud)['compute3'] == (True, False)
    host = forced('compute3')
    assert (host['name'], host['up'], host['forced_down']) == ('compute3', False, True)
    # Its agent's reports do not bring it back up.
    cloud.refresh()
    assert _hosts(cloud)['compute3'] == (False, True)
    host = cloud.api.force_down('compute3', False)
    assert (host['up'], host['forced_down']) == (True, False)
    assert _hosts(cloud)['compute3'] == (True, False)


def test_the_scheduler_never_picks_a_forced_down_host(cloud, guest, forced):
    g = guest('compute1')
    forced('compute2')
    forced('compute3')
    with pytest.raises(exception.NoValidHost) as err:
        cloud.api.live_migrate(g['name'])
    assert 'compute2 refused by filter up' in str(err.value)
    with pytest.raises(exception.HostUnavailable) as err:
        cloud.api.live_migrate(g['name'], host='compute3', force=True)
    assert 'compute3' in str(err.value) and 'forced down' in str(err.value)
    assert cloud.api.list_migrations(instance=g['uuid']) == []


def test_live_migration_from_a_forced_down_host_is_refused(cloud, guest, forced):
    g = guest('compute1')
    forced('compute1')
    with pytest.raises(exception.HostUnavailable) as err:
        cloud.api.live_migrate(g['name'], host='compute2')
    assert 'compute1' in str(err.value) and 'forced down' in str(err.value)
    assert cloud.api.list_migrations(instance=g['uuid']) == []


def test_an_unknown_host_is_refused_naming_it(cloud):
    cloud.refresh()
    before = _hosts(cloud)
    with pytest.raises(exception.HostNotFound) as err:
        cloud.api.force_down('no-such-host', True)
    assert 'no-such-host' in str(err.value)
    assert _hosts(cloud) == before


@pytest.mark.parametrize('value', ['yes', 1, None, 'true'])
def test_a_value_not_a_boolean_is_refused_naming_it(cloud, value):
    cloud.refresh()
    before = _hosts(cloud)
    with pytest.raises(exception.InvalidArgument) as err:
        cloud.api.force_down('compute3', value)
    assert 'forced_down' in str(err.value) and repr(value) in str(err.value)
    assert _hosts(cloud) == before


def test_cli_forces_down_lists_and_undoes(cloud, cli_conf, capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '200')  # the table whole
    cloud.refresh()
    try:
        assert cli.main(['host', 'force-down', 'compute3', '--config-file',
                         cli_conf]) == 0
        assert 'compute3 forced down' in capsys.readouterr().out
        assert cli.main(['host', 'list', '--json', '--config-file', cli_conf]) == 0
        listed = {h['name']: h for h in json.loads(capsys.readouterr().out)}
        assert (listed['compute3']['forced_down'], listed['compute3']['up']) == \
            (True, False)
        assert not listed['compute2']['forced_down']
        assert cli.main(['host', 'list', '--config-file', cli_conf]) == 0
        table = capsys.readouterr().out
        assert 'forced down' in table.splitlines()[2]
        cells = {line.split()[1]: line.split()[3:6:2] for line in table.splitlines()
                 if 'compute' in line}
        assert cells['compute3'] == ['False', 'True'] and \
            cells['compute2'] == ['True', 'False']
    finally:
        assert cli.main(['host', 'force-down', '--undo', 'compute3',
                         '--config-file', cli_conf]) == 0
    assert 'compute3 no longer forced down' in capsys.readouterr().out
    assert _hosts(cloud)['compute3'] == (True, False)


def test_cli_names_an_unknown_host(cloud, cli_conf, capsys):
    assert cli.main(['host', 'force-down', 'no-such-host', '--config-file',
                     cli_conf]) != 0
    assert 'no-such-host' in capsys.readouterr().err
