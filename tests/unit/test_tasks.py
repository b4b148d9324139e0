"""Single tasks and their reverts against fake services: no cloud, no engine.

The whole-migration matrix (test_reverts, test_resume...) shows the steps work
together; these pin each branch of a step down, including the ones a running
cloud hardly reaches (a revert whose database call fails, say)."""

import types

import pytest
from taskflow import retry
from taskflow.types import failure as tf_failure

import flows
from ferryman.common import exception
from flows import constants as c
from flows import selection
from flows import states
from flows.tasks import base
from flows.tasks import compute
from flows.tasks import database

MID = 'mig-1'
GUEST = {'uuid': 'g-1', 'name': 'guest'}


class FakeDb(object):
    """One migration's record; every write is noted in ``calls``, as
    'store.verb' (the database's stores: migrations, allocations, history)."""

    def __init__(self, fail=(), **migration):
        self.migration = dict({
            'id': MID, 'status': states.RUNNING, 'source': 'src',
            'destination': 'dst', 'switchover_at': None, 'cancel_requested': False,
            'rollback_errors': [], 'force': False}, **migration)
        self.fail = set(fail)
        self.calls = []
        self.migrations = _FakeMigrations(self)
        self.allocations = _FakeStore(self, 'allocations',
                                      ('unclaim', 'drop_source', 'claim'))
        self.history = _FakeStore(self, 'history', ('add',))

    def _call(self, name, *args, **kwargs):
        self.calls.append((name,) + args + ((kwargs,) if kwargs else ()))
        if name in self.fail:
            raise exception.FerrymanError('database down')


class _FakeMigrations(object):

    def __init__(self, db):
        self.db = db

    def get(self, migration_id):
        assert migration_id == MID
        if 'migrations.get' in self.db.fail:
            raise exception.FerrymanError('database down')
        return dict(self.db.migration)

    def advance(self, migration_id, event, **kwargs):
        self.db._call('migrations.advance', migration_id, event, **kwargs)

    def add_rollback_error(self, migration_id, text):
        self.db.migration['rollback_errors'].append(text)


class _FakeStore(object):
    """A store whose ``verbs`` only note their calls."""

    def __init__(self, db, name, verbs):
        self.db, self.name, self.verbs = db, name, verbs

    def __getattr__(self, verb):
        if verb in self.verbs:
            return lambda *args, **kwargs: self.db._call(
                '%s.%s' % (self.name, verb), *args, **kwargs)
        raise AttributeError(verb)


class FakeCompute(object):
    """Every call noted; a call named in ``fail`` raises its first ``times``."""

    def __init__(self, fail=(), times=100, guests=()):
        self.fail = set(fail)
        self.times = times
        self.guests = list(guests)
        self.calls = []

    def list_guests(self, host):
        return self.guests

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name,) + args)
            if name in self.fail and self.times > 0:
                self.times -= 1
                raise exception.FerrymanError('agent says no')
        return call


def _conf(**conductor):
    return types.SimpleNamespace(conductor=types.SimpleNamespace(**dict(
        {'post_migration_attempts': 3, 'post_migration_retry_delay': 0.0},
        **conductor)))


def _bound(atom, db=None, compute_api=None):
    services = base.Services(_conf(), db or FakeDb(), compute_api or FakeCompute())
    atom.services = services
    return atom


def _failure(text):
    try:
        raise ValueError(text)
    except ValueError:
        return tf_failure.Failure()


# The sentinel: the migration's status when its flow fails. -----------------------
def _sentinel_revert(db, failures=None):
    _bound(database.MigrationSentinel(), db).revert(
        MID, flow_failures=failures or {c.START_MIGRATION: _failure('boom')})
    return [call for call in db.calls if call[0] == 'migrations.advance']


def test_sentinel_fails_a_migration_wholly_undone():
    assert _sentinel_revert(FakeDb()) == [
        ('migrations.advance', MID, 'fail', {'error': 'boom', 'error_kind': None,
                                             'last_known_host': 'src'})]


def test_sentinel_records_the_kind_of_the_error():
    """What a drain acts on (every candidate filled up: it tries again),
    whatever the message says; a failure loaded from storage keeps it."""
    try:
        raise exception.InsufficientCapacity(message='full')
    except exception.InsufficientCapacity:
        full = tf_failure.Failure()
    loaded = tf_failure.Failure.from_dict(full.to_dict())
    for failure in (full, loaded):
        assert _sentinel_revert(FakeDb(), {'a': _failure('other'), 'b': failure}) \
            == [('migrations.advance', MID, 'fail', {
                'error': 'other; full', 'error_kind': exception.NO_ROOM,
                'last_known_host': 'src'})]


def test_sentinel_errs_once_the_guest_runs_on_the_destination():
    db = FakeDb(switchover_at='2026-01-01T00:00:00', cancel_requested=True)
    assert _sentinel_revert(db) == [
        ('migrations.advance', MID, 'error', {'error': 'boom', 'error_kind': None,
                                              'last_known_host': 'dst'})]


def test_sentinel_cancels_an_aborted_migration_wholly_undone():
    assert _sentinel_revert(FakeDb(cancel_requested=True)) == [
        ('migrations.advance', MID, 'cancel', {'error': 'aborted on request',
                                               'last_known_host': 'src'})]


@pytest.mark.parametrize('cancelled', [False, True])
def test_sentinel_errs_when_an_undo_failed(cancelled):
    db = FakeDb(cancel_requested=cancelled, rollback_errors=['unplug: refused'])
    assert _sentinel_revert(db) == [
        ('migrations.advance', MID, 'error', {
            'error': 'boom; rollback incomplete: unplug: refused',
            'error_kind': None, 'last_known_host': 'src'})]


def test_sentinel_leaves_an_ended_migration_alone():
    assert _sentinel_revert(FakeDb(status=states.CANCELLED)) == []


def test_sentinel_joins_every_failure_and_names_a_flow_without_any():
    failures = {'a': _failure('one'), 'b': _failure('two'), 'c': 'not a failure'}
    (call,) = _sentinel_revert(FakeDb(), failures)
    assert sorted(call[3]['error'].split('; ')) == ['one', 'two']
    db = FakeDb()
    _bound(database.MigrationSentinel(), db).revert(MID, flow_failures={})
    assert db.calls[0][3]['error'] == 'flow failed'


@pytest.mark.parametrize('fail', ['migrations.get', 'migrations.advance'])
def test_sentinel_revert_never_raises(fail):
    db = FakeDb(fail=[fail])
    _sentinel_revert(db)  # logged, not raised: nothing else would run after it


@pytest.mark.parametrize('status, advanced', [
    (states.ACCEPTED, [('migrations.advance', MID, 'prepare')]),
    (states.PREPARING, [])])  # resumed after it had run
def test_sentinel_prepares_an_accepted_migration_once(status, advanced):
    db = FakeDb(status=status)
    _bound(database.MigrationSentinel(), db).execute(MID)
    assert db.calls == advanced


# Claims. ---------------------------------------------------------------------------
def test_a_failed_claim_has_nothing_to_release():
    db = FakeDb()
    _bound(database.ClaimResources(), db).revert(MID, 'dst', _failure('full'))
    assert db.calls == []


def test_claim_revert_releases_the_attempts_claim_before_switch_over():
    db = FakeDb()
    _bound(database.ClaimResources(), db).revert(MID, 'dst', None)
    assert db.calls == [('allocations.unclaim', MID, 'dst')]


def test_claim_revert_past_switch_over_drops_the_source_allocation_only():
    db = FakeDb(switchover_at='2026-01-01T00:00:00')
    _bound(database.ClaimResources(), db).revert(MID, 'dst', None)
    assert db.calls == [('allocations.drop_source', MID)]


def test_claim_revert_records_a_failed_release_and_goes_on():
    db = FakeDb(fail=['allocations.unclaim'])
    _bound(database.ClaimResources(), db).revert(MID, 'dst', None)
    assert db.migration['rollback_errors'] == [
        'release claim on dst: database down']


def test_claim_notes_the_attempt_when_there_are_several_candidates():
    db = FakeDb()
    _bound(database.ClaimResources(), db).execute(MID, 'b', ['a', 'b'])
    assert db.calls == [
        ('history.add', MID, c.CLAIM_RESOURCES, 'ATTEMPT', {
            'host': 'b', 'details': {'attempt': 2, 'candidates': ['a', 'b']}}),
        ('allocations.claim', MID, 'b', {'force': False})]


# The retry over candidate destinations. --------------------------------------------
def _decision(db, tried):
    history = retry.History([(host, {}) for host in tried])
    return _bound(database.DestinationRetry(), db).on_failure(
        ['a', 'b'], history, migration_id=MID)


def test_retry_tries_the_next_candidate():
    assert _decision(FakeDb(), ['a']) == retry.RETRY


def test_retry_gives_up_out_of_candidates():
    assert _decision(FakeDb(), ['a', 'b']) == retry.REVERT_ALL


@pytest.mark.parametrize('db', [FakeDb(cancel_requested=True),
                                FakeDb(fail=['migrations.get'])])
def test_retry_stops_once_aborted_or_unreadable(db):
    assert _decision(db, ['a']) == retry.REVERT_ALL


# Agent steps. ----------------------------------------------------------------------
def test_check_destination_revert_removes_its_probe():
    api = FakeCompute()
    _bound(compute.CheckDestination(), compute_api=api).revert(MID, 'dst')
    assert api.calls == [('remove_probe', 'dst', selection.probe_token(MID))]


@pytest.mark.parametrize('task, undo', [
    (compute.CreateLocalDisks, 'delete_local_disks'),
    (compute.ConnectVolumes, 'disconnect_volumes'),
    (compute.PlugNetworking, 'unplug_networking')])
def test_destination_undo_runs_only_before_switch_over(task, undo):
    api = FakeCompute()
    _bound(task(), FakeDb(), api).revert(MID, GUEST, 'dst')
    assert api.calls == [(undo, 'dst', GUEST)]
    api = FakeCompute()
    _bound(task(), FakeDb(switchover_at='2026-01-01T00:00:00'), api).revert(
        MID, GUEST, 'dst')
    assert api.calls == []  # it would remove what the guest runs on


def test_a_failed_undo_is_recorded_never_raised():
    db = FakeDb()
    _bound(compute.PlugNetworking(), db, FakeCompute(
        fail=['unplug_networking'])).revert(MID, GUEST, 'dst')
    assert db.migration['rollback_errors'] == [
        'unplug destination ports: agent says no']


def test_forward_only_step_is_tried_again_then_succeeds():
    api = FakeCompute(fail=['post_migration_source'], times=2)
    _bound(compute.PostMigrationSource(), FakeDb(), api).execute(
        MID, GUEST, 'src', 'block')
    assert api.calls == [('post_migration_source', 'src', GUEST, 'block')] * 3


def test_forward_only_step_gives_up_after_its_attempts():
    api = FakeCompute(fail=['post_migration_source'])
    with pytest.raises(exception.FerrymanError, match='agent says no'):
        _bound(compute.PostMigrationSource(), FakeDb(), api).execute(
            MID, GUEST, 'src', 'block')
    assert len(api.calls) == 3


# Binding. --------------------------------------------------------------------------
def test_an_unbound_task_names_itself():
    with pytest.raises(exception.FerrymanError, match=c.CLAIM_RESOURCES):
        database.ClaimResources().execute(MID, 'dst', ['dst'])


@pytest.mark.parametrize('subtype', sorted(flows.FACTORIES))
def test_bind_reaches_every_atom_and_only_that_flows(subtype):
    one, other = base.Services(None, FakeDb(), None), base.Services(None, None, None)
    flow = base.bind(flows.build(subtype), one)
    base.bind(flows.build(subtype), other)
    atoms = list(base.iter_atoms(flow))
    assert any(isinstance(a, database.DestinationRetry) for a in atoms)
    assert len(atoms) == len(list(flows.iter_tasks(flow))) + 1
    assert {id(a.services) for a in atoms} == {id(one)}
