"""A conductor restarted after kill -9 while it was accepting migrations: it always
starts, resumes what it can, fails what never began, and one bad saved flow never
stops the others; accepting a migration saves its flow whole or not at all."""

import contextlib

import pytest
from oslo_utils import uuidutils
import taskflow.engines
from taskflow import exceptions as tf_exc
from taskflow import states as tf_states
from taskflow import storage as tf_storage
from taskflow.persistence import models as tf_models
from taskflow.utils import persistence_utils as p_utils

import flows
from conductor import persistence
from flows import constants as c
from flows import states


class Crash(BaseException):
    """The process dies here: no handler of the conductor's runs after it."""


def _book(mig):
    return tf_models.LogBook('migration-%s' % mig['id'], uuid=mig['id'])


def _injector(results):
    ad = tf_models.TaskDetail(tf_storage.Storage.injector_name,
                              uuidutils.generate_uuid())
    ad.state = None
    ad.results = results
    return ad


# Saved flows a conductor killed mid-way through TaskFlow's own
# load_from_factory (book, then factory, then store: three writes) left behind.
def _no_store(runner, mig, store):
    """Killed after the flow detail and its factory were saved, before the store."""
    book = _book(mig)
    fd = p_utils.create_flow_detail(flows.build(mig['subtype']), book=book,
                                    backend=runner.backend)
    taskflow.engines.save_factory_details(fd, flows.FACTORIES[mig['subtype']],
                                          None, None, backend=runner.backend)


def _no_factory(runner, mig, store):
    """Killed right after the book and its flow detail were saved."""
    p_utils.create_flow_detail(flows.build(mig['subtype']), book=_book(mig),
                               backend=runner.backend)


def _empty_store(runner, mig, store):
    """Killed between the store's atom being added and its values written."""
    _no_store(runner, mig, store)
    with contextlib.closing(runner.backend.get_connection()) as conn:
        (fd,) = conn.get_logbook(mig['id'])
        fd.add(_injector(None))
        conn.update_flow_details(fd)


def _partial_store(runner, mig, store):
    """A store missing values (a hand edit, a bug): unreadable all the same."""
    _no_store(runner, mig, store)
    with contextlib.closing(runner.backend.get_connection()) as conn:
        (fd,) = conn.get_logbook(mig['id'])
        fd.add(_injector({c.MIGRATION_ID: mig['id']}))
        conn.update_flow_details(fd)


BAD_SAVES = [_no_store, _no_factory, _empty_store, _partial_store]


@contextlib.contextmanager
def _submitting(cloud, monkeypatch, submit):
    """Requests accepted meanwhile reach ``submit(runner, mig, store)`` in place
    of the runner's own: what it saved is what a dead conductor left."""
    runner = cloud.conductor.manager.runner
    with monkeypatch.context() as m:
        m.setattr(runner, 'submit', lambda mig, store: submit(runner, mig, store))
        yield runner


def _saved_only(runner, mig, store):
    """Saved whole, then killed before it ran."""
    runner.save(mig, store)


def _released(cloud, g, mig):
    """The guest runs on its source, unlocked, holding its claim there only."""
    source = mig['source']
    assert cloud.cloud.find_guest(g['uuid']) == {source: 'running'}
    inst = cloud.db.instances.get(g['uuid'])
    assert (inst['host'], inst['migration_id']) == (source, None)
    assert cloud.db.allocations.list(consumer=mig['id']) == []
    assert [a['host'] for a in cloud.db.allocations.list(consumer=g['uuid'])] == [
        source]


@pytest.mark.parametrize('bad_save', BAD_SAVES, ids=lambda f: f.__name__)
def test_a_bad_saved_flow_fails_and_the_others_resume(cloud, guest, monkeypatch,
                                                      bad_save):
    bad_guest, good_guest = guest('compute1'), guest('compute1')
    # The bad one first: the restart meets it before the good one.
    with _submitting(cloud, monkeypatch, bad_save):
        bad = cloud.api.live_migrate(bad_guest['name'], host='compute2')
    with _submitting(cloud, monkeypatch, _saved_only) as runner:
        good = cloud.api.live_migrate(good_guest['name'], host='compute2')
    assert runner.resume_all() == [good['id']]  # as the conductor's start does
    assert cloud.wait(good['id'])['status'] == states.COMPLETED
    assert cloud.cloud.find_guest(good_guest['uuid']) == {'compute2': 'running'}
    bad = cloud.wait(bad['id'])
    assert bad['status'] == states.FAILED
    assert 'nothing had been done' in bad['error']
    _released(cloud, bad_guest, bad)
    (event,) = cloud.db.history.list(bad['id'])
    assert (event['atom'], event['state'], event['error']) == (
        c.MIGRATION_SENTINEL, tf_states.FAILURE, bad['error'])
    assert cloud.api.audit()['violations'] == []


def test_an_unreadable_flow_that_had_begun_ends_in_error(cloud, guest, monkeypatch):
    """Its store lost after its first step: nothing can undo or finish it from
    the flow, so an operator must look; the conductor starts all the same."""
    g = guest('compute1')
    with _submitting(cloud, monkeypatch, _saved_only) as runner:
        mig = cloud.api.live_migrate(g['name'], host='compute2')
    cloud.db.migrations.advance(mig['id'], 'prepare')
    with contextlib.closing(runner.backend.get_connection()) as conn:
        (fd,) = conn.get_logbook(mig['id'])
        for ad in fd:
            if ad.name == c.MIGRATION_SENTINEL:
                ad.state = tf_states.SUCCESS
            elif ad.name == tf_storage.Storage.injector_name:
                ad.results = None
        conn.update_flow_details(fd)
        for ad in fd:
            conn.update_atom_details(ad)
    assert runner.resume_all() == []
    mig = cloud.wait(mig['id'])
    assert mig['status'] == states.ERROR
    assert 'cannot be read' in mig['error']


def test_resume_all_goes_on_past_a_migration_that_cannot_be_resumed(
        cloud, guest, monkeypatch):
    """Whatever resuming one raises (here the database), the next still resumes."""
    first, second = guest('compute1'), guest('compute1')
    with _submitting(cloud, monkeypatch, _saved_only) as runner:
        broken = cloud.api.live_migrate(first['name'], host='compute2')
        good = cloud.api.live_migrate(second['name'], host='compute2')
    real = runner.pool.run

    def run(mid, *args):
        if mid == broken['id']:
            raise RuntimeError('database gone')
        return real(mid, *args)
    monkeypatch.setattr(runner.pool, 'run', run)
    assert runner.resume_all() == [good['id']]
    assert cloud.wait(good['id'])['status'] == states.COMPLETED
    monkeypatch.undo()
    assert runner.resume_all() == [broken['id']]  # the next pass (the reaper's)
    assert cloud.wait(broken['id'])['status'] == states.COMPLETED


# Accepting: every write the save makes, a crash before it. -----------------------
WRITES = ('save_logbook', 'update_flow_details', 'update_atom_details')


@pytest.fixture
def crash_before(monkeypatch):
    """``armed(k)``: writes to the conductor's persistence count up while armed;
    the process "dies" before write k+1 (None: counts only); ``writes`` lists
    those made."""
    state = {'at': None, 'armed': False, 'writes': []}

    def wrap(name):
        real = getattr(persistence._Connection, name)

        def write(self, *args, **kwargs):
            if state['armed']:
                if len(state['writes']) == state['at']:
                    raise Crash('killed before %s' % name)
                state['writes'].append(name)
            return real(self, *args, **kwargs)
        monkeypatch.setattr(persistence._Connection, name, write)
    for name in WRITES:
        wrap(name)

    @contextlib.contextmanager
    def armed(at):
        state.update(at=at, armed=True, writes=[])
        try:
            yield state['writes']
        finally:
            state['armed'] = False
    return armed


def test_a_crash_while_accepting_leaves_nothing_or_all_of_it(
        cloud, guest, monkeypatch, crash_before):
    stores, written = {}, {}

    def accept(at):
        def submit(runner, mig, store):
            stores[mig['id']] = store
            with crash_before(at) as writes:
                try:
                    runner.save(mig, store)
                except Crash:
                    pass
            written[mig['id']] = writes
        g = guest('compute1')
        with _submitting(cloud, monkeypatch, submit) as runner:
            return g, cloud.api.live_migrate(g['name'], host='compute2'), runner

    # A save that completes, to count its writes.
    g, mig, runner = accept(None)
    count = len(written[mig['id']])
    assert count >= 1
    cases = [(None, g, mig)] + [(at,) + accept(at)[:2] for at in range(count)]
    for at, g, mig in cases:
        with contextlib.closing(runner.backend.get_connection()) as conn:
            try:
                (fd,) = conn.get_logbook(mig['id'])
            except tf_exc.NotFound:
                continue  # nothing recorded
        # Else all of it: the store and the factory to rebuild the flow from.
        saved = [ad.results for ad in fd
                 if ad.name == tf_storage.Storage.injector_name]
        assert saved == [stores[mig['id']]], 'half saved: crash before write %s' % (
            at + 1)
        assert fd.meta['factory']['name'] == flows.FACTORIES[mig['subtype']]
    ids = runner.resume_all()
    for at, g, mig in cases:
        end = cloud.wait(mig['id'])
        if mig['id'] in ids:
            assert end['status'] == states.COMPLETED, (at, end)
        else:
            assert end['status'] == states.FAILED, (at, end)
            _released(cloud, g, end)
    assert cloud.api.audit()['violations'] == []
