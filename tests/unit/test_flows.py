import json

import pytest
from oslo_utils import importutils
from taskflow import task as tf_task

import flows
from flows import constants as c
from flows import selection
from flows import states
from ferryman.common import exception


_tasks = flows.iter_tasks


EXPECTED = {
    'block': [c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CHECK_DESTINATION,
              c.CHECK_SOURCE, c.REMOVE_PROBE, c.CREATE_LOCAL_DISKS,
              c.PLUG_NETWORKING, c.START_MIGRATION, c.MONITOR_MIGRATION,
              c.POST_MIGRATION_SOURCE, c.POST_MIGRATION_DESTINATION,
              c.FINISH_MIGRATION],
    'file-level': [c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CHECK_DESTINATION,
                   c.CHECK_SOURCE, c.REMOVE_PROBE, c.PLUG_NETWORKING,
                   c.START_MIGRATION, c.MONITOR_MIGRATION,
                   c.POST_MIGRATION_SOURCE, c.POST_MIGRATION_DESTINATION,
                   c.FINISH_MIGRATION],
    'block-storage': [c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CHECK_DESTINATION,
                      c.CHECK_SOURCE, c.REMOVE_PROBE, c.CONNECT_VOLUMES,
                      c.PLUG_NETWORKING, c.START_MIGRATION, c.MONITOR_MIGRATION,
                      c.POST_MIGRATION_SOURCE, c.POST_MIGRATION_DESTINATION,
                      c.FINISH_MIGRATION],
}


def test_name_constants_are_unique():
    names = [v for k, v in vars(c).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_atoms_in_order_and_stable(subtype):
    assert [t.name for t in _tasks(flows.build(subtype))] == EXPECTED[subtype]


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_flow_needs_only_store_keys(subtype):
    flow = flows.build(subtype)
    assert flow.requires <= set(c.STORE_KEYS)
    # No task results travel (state lives in the database); only the retry over
    # candidate destinations hands each attempt its host.
    assert flow.provides == {c.PLACED_DESTINATION}


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_claim_checks_and_preparation_are_retried_together(subtype):
    (place,) = [n for n, _ in flows.build(subtype).iter_nodes()
                if n.name == c.PLACE_SUBFLOW]
    assert place.retry.name == c.DESTINATION_RETRY
    assert place.retry.provides == {c.PLACED_DESTINATION}
    inside = [t.name for t in _tasks(place)]
    # The claim goes inside the retried subflow: each attempt undoes its own.
    assert inside[0] == c.CLAIM_RESOURCES
    assert c.CHECK_DESTINATION in inside and c.START_MIGRATION not in inside
    for task in _tasks(flows.build(subtype)):
        if 'destination' in task.rebind:
            assert task.rebind['destination'] == c.PLACED_DESTINATION


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_sentinel_heads_every_flow(subtype):
    assert next(_tasks(flows.build(subtype))).name == c.MIGRATION_SENTINEL


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_changing_steps_have_reverts_and_tail_has_none(subtype):
    tasks = {t.name: t for t in _tasks(flows.build(subtype))}
    has_revert = {n for n, t in tasks.items()
                  if type(t).revert is not tf_task.Task.revert}
    changing = {c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CHECK_DESTINATION,
                c.CREATE_LOCAL_DISKS, c.CONNECT_VOLUMES, c.PLUG_NETWORKING,
                c.START_MIGRATION}
    assert has_revert == changing & set(tasks)
    # Past switch-over only forward.
    tail = {c.POST_MIGRATION_SOURCE, c.POST_MIGRATION_DESTINATION,
            c.FINISH_MIGRATION}
    assert not has_revert & tail


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_factories_reimport_by_name(subtype):
    factory = importutils.import_class(flows.FACTORIES[subtype])
    assert [t.name for t in _tasks(factory())] == EXPECTED[subtype]


def test_store_json_round_trip(cloud, guest):
    g = guest()
    mig = cloud.api.live_migrate(g['name'], host='compute2')
    cloud.wait(mig['id'])
    from taskflow.persistence import models  # noqa: F401
    backend = cloud.conductor.manager.runner.backend
    import contextlib
    with contextlib.closing(backend.get_connection()) as conn:
        books = [b for b in conn.get_logbooks() if b.name == 'migration-' + mig['id']]
        assert len(books) == 1
        (fd,) = list(books[0])
        store = None
        for ad in fd:
            if ad.name.startswith('_TaskFlow_'):
                store = ad.results
        assert store is not None
        assert json.loads(json.dumps(store)) == store
        assert store['migration_id'] == mig['id']
        assert fd.meta['factory']['name'] == flows.FACTORIES['block']


HAPPY_EVENTS = {
    states.EVACUATION: ('prepare', 'connect_volumes', 'rebuild', 'switch_over',
                        'complete'),
    states.BLOCK: ('prepare', 'start', 'disks_copied', 'switch_over', 'complete'),
    states.FILE_LEVEL: ('prepare', 'start', 'switch_over', 'complete'),
    states.BLOCK_STORAGE: ('prepare', 'connect_volumes', 'start', 'switch_over',
                           'complete'),
}


@pytest.mark.parametrize('subtype', states.KINDS)
def test_state_machine_happy_path(subtype):
    s = states.ACCEPTED
    for event in HAPPY_EVENTS[subtype]:
        s = states.advance(subtype, s, event)
    assert s == states.COMPLETED


@pytest.mark.parametrize('current,event', [
    (states.COMPLETED, 'start'), (states.FINISHING, 'fail'),
    (states.FINISHING, 'cancel'), (states.ACCEPTED, 'complete'),
    (states.FAILED, 'prepare')])
def test_state_machine_refuses(current, event):
    with pytest.raises(exception.Invalid):
        states.advance('block', current, event)


def test_each_subtype_has_its_own_states_with_shared_names():
    own = {subtype: set(states.MACHINES[subtype].states)
           for subtype in states.SUBTYPES}
    shared = set.intersection(*own.values())
    assert shared == set(states.TERMINAL) | {
        states.ACCEPTED, states.PREPARING, states.RUNNING, states.POST_COPY,
        states.FINISHING}
    assert own[states.FILE_LEVEL] == shared
    assert own[states.BLOCK] - shared == {states.COPYING_DISKS}
    assert own[states.BLOCK_STORAGE] - shared == {states.CONNECTING_VOLUMES}
    # Evacuation: the same names where they mean the same, and its own.
    evacuation = set(states.MACHINES[states.EVACUATION].states)
    assert evacuation == set(states.TERMINAL) | {
        states.ACCEPTED, states.PREPARING, states.CONNECTING_VOLUMES,
        states.REBUILDING, states.FINISHING}
    # Each machine's states are the vocabulary's, every one of them used.
    assert set.union(evacuation, *own.values()) == set(states.ACTIVE +
                                                       states.TERMINAL)


@pytest.mark.parametrize('subtype', states.KINDS)
def test_every_state_is_reached_and_leads_to_an_end(subtype):
    machine = states.MACHINES[subtype]
    edges = [(src, dst) for src, _event, dst in machine]
    reached, todo = {states.ACCEPTED}, [states.ACCEPTED]
    while todo:
        here = todo.pop()
        for src, dst in edges:
            if src == here and dst not in reached:
                reached.add(dst)
                todo.append(dst)
    assert reached == set(machine.states)
    for state in set(machine.states) - set(states.TERMINAL):
        assert any(src == state for src, _dst in edges), state


@pytest.mark.parametrize('subtype', states.KINDS)
def test_cancel_until_switch_over_only(subtype):
    for state in states.MACHINES[subtype].states:
        assert states.allows(subtype, state, 'cancel') == (
            state in states.BEFORE_SWITCH_OVER), state


@pytest.mark.parametrize('subtype,current,event', [
    (states.BLOCK, states.PREPARING, 'connect_volumes'),
    (states.FILE_LEVEL, states.PREPARING, 'connect_volumes'),
    (states.BLOCK, states.COPYING_DISKS, 'switch_over'),
    (states.BLOCK_STORAGE, states.CONNECTING_VOLUMES, 'switch_over'),
    (states.FILE_LEVEL, states.RUNNING, 'disks_copied')])
def test_a_subtype_refuses_another_subtypes_events(subtype, current, event):
    with pytest.raises(exception.Invalid):
        states.advance(subtype, current, event)


@pytest.mark.parametrize('facts,requested,expected', [
    ({'shared_instance_path': True, 'volume_backed': False}, 'auto', 'file-level'),
    ({'shared_instance_path': False, 'volume_backed': True}, 'auto', 'block-storage'),
    ({'shared_instance_path': False, 'volume_backed': False}, 'auto', 'block'),
    ({'shared_instance_path': False, 'volume_backed': False}, 'true', 'block'),
    ({'shared_instance_path': True, 'volume_backed': False}, 'false', 'file-level'),
])
def test_choose_subtype(facts, requested, expected):
    assert selection.choose_subtype(requested, facts, 'i', 'h') == expected


@pytest.mark.parametrize('facts,requested', [
    ({'shared_instance_path': True, 'volume_backed': False}, 'true'),
    ({'shared_instance_path': False, 'volume_backed': True}, 'true'),
    ({'shared_instance_path': False, 'volume_backed': False}, 'false'),
])
def test_choose_subtype_refuses_contradiction(facts, requested):
    with pytest.raises(exception.StorageMismatch) as err:
        selection.choose_subtype(requested, facts, 'inst', 'h')
    assert requested in str(err.value)


@pytest.mark.parametrize('value', ['maybe', 1, None, ['auto']])
def test_block_migration_values(value):
    with pytest.raises(exception.InvalidArgument) as err:
        selection.normalize_block_migration(value)
    assert repr(value) in str(err.value)
