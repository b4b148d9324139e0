"""The conductor's TaskFlow persistence: flows really are saved as they run, a flow
killed mid-way resumes from what was saved, and the cheap write path stores what
the stock SQLAlchemy backend stores, at two atom writes per task."""

import contextlib
import json
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa
import taskflow.engines
from taskflow import exceptions as tf_exc
from taskflow import states as tf_states
from taskflow import task
from taskflow.patterns import linear_flow
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence import models as tf_models

import flows
from conductor.db import api as db_api
from conductor import persistence
from ferryman.common import exception
from flows import states

STEPS = 4
KILL_ENV = 'FERRYMAN_TEST_KILL_AT'
LOG_ENV = 'FERRYMAN_TEST_STEP_LOG'


class Step(task.Task):
    """Appends its name to a log file; kills its own process where told to."""

    def execute(self, label):
        with open(os.environ[LOG_ENV], 'a') as f:
            f.write(self.name + '\n')
        if os.environ.get(KILL_ENV) == self.name:
            os.kill(os.getpid(), 9)
        return {'step': self.name, 'label': label}


def steps_flow():
    return linear_flow.Flow('steps').add(*[Step('step-%d' % i) for i in range(STEPS)])


def _backend(url):
    db = db_api.Database(url)
    backend = persistence.Backend({'connection': url}, engine=db.engine)
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()
    return backend


def _stock(url):
    """An independent reader: TaskFlow's own backend on its own engine."""
    return impl_sqlalchemy.SQLAlchemyBackend({'connection': url})


def _book(backend, book_id):
    with contextlib.closing(backend.get_connection()) as conn:
        (flow_detail,) = list(conn.get_logbook(book_id))
    return flow_detail


@pytest.fixture
def url(tmp_path):
    return 'sqlite:///%s' % (tmp_path / 'flows.sqlite')


def _run_steps(backend, book_id):
    book = tf_models.LogBook('book', uuid=book_id)
    engine = taskflow.engines.load_from_factory(
        steps_flow, store={'label': 'x'}, book=book, backend=backend,
        engine='serial')
    engine.run()
    return engine


def test_migration_flow_and_atoms_are_in_the_database(cloud, guest):
    """Fails if the conductor's flows silently stopped being saved."""
    g = guest(host='compute2')
    mig = cloud.api.live_migrate(g['name'], host='compute3')
    assert cloud.wait(mig['id'])['status'] == states.COMPLETED
    stock = _stock(cloud.db.url)
    try:
        flow_detail = _book(stock, mig['id'])
    finally:
        stock.close()
    assert flow_detail.state == tf_states.SUCCESS
    tasks = [ad for ad in flow_detail if isinstance(ad, tf_models.TaskDetail)
             and not ad.name.startswith('_TaskFlow_')]
    assert sorted(ad.name for ad in tasks) == sorted(
        t.name for t in flows.iter_tasks(flows.build(mig['subtype'])))
    assert {(ad.state, ad.meta.get('progress')) for ad in tasks} == {
        (tf_states.SUCCESS, 1.0)}
    injected = [ad for ad in flow_detail if ad.name.startswith('_TaskFlow_')]
    assert injected[0].results['migration_id'] == mig['id']
    history = cloud.db.history.list(mig['id'])
    assert [e['state'] for e in history if e['atom'] == 'claim-resources'] == [
        'RUNNING', 'SUCCESS']


def test_stored_rows_equal_the_stock_backends(url, monkeypatch):
    """Same flow, stock backend and ours: the same rows, but for the uuids."""
    monkeypatch.setenv(LOG_ENV, os.devnull)
    ours = _backend(url)
    stock = _stock(url)
    rows = {}
    for name, backend in (('ours', ours), ('stock', stock)):
        book_id = str(uuid.uuid4())
        _run_steps(backend, book_id)
        flow_detail = _book(_stock(url), book_id)
        rows[name] = (flow_detail.state, flow_detail.meta, sorted(
            (ad.name, ad.state, ad.intention, ad.results, ad.meta, ad.version)
            for ad in flow_detail))
    assert rows['ours'] == rows['stock']
    assert rows['ours'][2][1][1:5] == (tf_states.SUCCESS, tf_states.EXECUTE,
                                       {'step': 'step-0', 'label': 'x'},
                                       {'progress': 1.0})
    stock.close()


def test_two_atom_writes_per_task(url, monkeypatch):
    """A state write carries the engine's progress: its own write is skipped."""
    monkeypatch.setenv(LOG_ENV, os.devnull)
    backend = _backend(url)
    updates = []

    def count(conn, cursor, statement, *args):
        if statement.startswith('UPDATE atomdetails'):
            updates.append(statement)
    sa.event.listen(backend.engine, 'before_cursor_execute', count)
    _run_steps(backend, str(uuid.uuid4()))
    # Two per task (RUNNING, SUCCESS with its result) and the store, once.
    assert len(updates) == 2 * STEPS + 1


def test_a_row_read_back_is_never_taken_as_known(url, monkeypatch):
    """Another writer changed the atom; once read back, our next write lands."""
    monkeypatch.setenv(LOG_ENV, os.devnull)
    backend = _backend(url)
    book_id = str(uuid.uuid4())
    _run_steps(backend, book_id)
    ad = [a for a in _book(backend, book_id) if a.name == 'step-0'][0]
    other = _stock(url)
    with contextlib.closing(other.get_connection()) as conn:
        changed = ad.copy()
        changed.state = tf_states.FAILURE
        conn.update_atom_details(changed)
    other.close()
    # Read back (as a resume does), then store what this process stored before.
    again = [a for a in _book(backend, book_id) if a.name == 'step-0'][0]
    assert again.state == tf_states.FAILURE
    with contextlib.closing(backend.get_connection()) as conn:
        conn.update_atom_details(ad)
    assert [a for a in _book(_stock(url), book_id)
            if a.name == 'step-0'][0].state == tf_states.SUCCESS


def test_unknown_atom_or_flow_is_not_found(url):
    backend = _backend(url)
    with contextlib.closing(backend.get_connection()) as conn:
        with pytest.raises(tf_exc.NotFound, match='nope'):
            conn.update_atom_details(tf_models.TaskDetail('x', 'nope'))
        with pytest.raises(tf_exc.NotFound, match='nada'):
            conn.update_flow_details(tf_models.FlowDetail('f', 'nada'))


_CHILD = """
import sys, taskflow.engines
from taskflow.persistence import models
from tests.unit import test_persistence as t
backend = t._backend(sys.argv[1])
book = models.LogBook('book', uuid=sys.argv[2])
taskflow.engines.load_from_factory(t.steps_flow, store={'label': 'x'}, book=book,
                                   backend=backend, engine='serial').run()
"""


@pytest.mark.parametrize('killed_in', ['step-0', 'step-2', 'step-3'])
def test_process_killed_in_a_task_resumes_from_the_database(
        url, tmp_path, monkeypatch, killed_in):
    """SIGKILL inside a task: a new backend (a new process's) runs that task again
    and the ones after it, never the ones before."""
    log = tmp_path / 'steps.log'
    book_id = str(uuid.uuid4())
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, **{KILL_ENV: killed_in, LOG_ENV: str(log)})
    proc = subprocess.run([sys.executable, '-c', _CHILD, url, book_id], env=env,
                          cwd=root, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    killed = int(killed_in.split('-')[1])
    assert log.read_text().split() == ['step-%d' % i for i in range(killed + 1)]

    backend = _backend(url)
    saved = {ad.name: ad.state for ad in _book(backend, book_id)}
    assert saved[killed_in] == tf_states.RUNNING
    monkeypatch.setenv(LOG_ENV, str(log))
    engine = taskflow.engines.load_from_detail(_book(backend, book_id),
                                               backend=backend, engine='serial')
    engine.run()
    ran = log.read_text().split()
    assert ran == ['step-%d' % i for i in range(killed + 1)] + [
        'step-%d' % i for i in range(killed, STEPS)]
    final = _book(_stock(url), book_id)
    assert final.state == tf_states.SUCCESS
    assert json.loads(json.dumps(final.find(
        [ad.uuid for ad in final if ad.name == 'step-%d' % (STEPS - 1)][0]
    ).results)) == {'step': 'step-%d' % (STEPS - 1), 'label': 'x'}


def test_values_changed_in_place_are_still_written(url, monkeypatch):
    """Storage's inject() updates the live store in place: the second injection
    must reach the database all the same."""
    monkeypatch.setenv(LOG_ENV, os.devnull)
    backend = _backend(url)
    book_id = str(uuid.uuid4())
    book = tf_models.LogBook('book', uuid=book_id)
    engine = taskflow.engines.load_from_factory(
        steps_flow, store={'label': 'x'}, book=book, backend=backend,
        engine='serial')
    engine.storage.inject({'label': 'y'})
    engine.storage.inject({'extra': 1})
    injector = [ad for ad in _book(_stock(url), book_id)
                if ad.name.startswith('_TaskFlow_')][0]
    assert injector.results == {'label': 'y', 'extra': 1}


def test_retry_history_with_failures_survives_a_reload(tmp_path):
    # A retry over destinations that failed once: resumed (after a crash), it
    # must still provide the host it had tried, not the failure beside it.
    url = 'sqlite:///%s' % (tmp_path / 'retry.sqlite')
    backend = _backend(url)
    from taskflow.types import failure as tf_failure
    try:
        raise RuntimeError('claim refused')
    except RuntimeError:
        failed = tf_failure.Failure()
    book = tf_models.LogBook('retry-book')
    flow = tf_models.FlowDetail('retry-flow', uuid=str(uuid.uuid4()))
    retry_detail = tf_models.RetryDetail('try-destinations', uuid=str(uuid.uuid4()))
    retry_detail.results = [('host2', {'claim-resources': failed}), ('host3', {})]
    flow.add(retry_detail)
    book.add(flow)
    with contextlib.closing(backend.get_connection()) as conn:
        conn.save_logbook(book)
        (loaded,) = list(conn.get_logbook(book.uuid))
    found = loaded.find(retry_detail.uuid)
    assert [data for data, _ in found.results] == ['host2', 'host3']
    assert found.last_results == 'host3'
    assert found.results[0][1]['claim-resources'].check(RuntimeError)


def test_a_flow_lists_its_saved_atoms_once(url, monkeypatch):
    """Flow writes after the first know which atoms have rows: a process that
    has not seen the flow saved lists them once, then never again."""
    monkeypatch.setenv(LOG_ENV, os.devnull)
    book_id = str(uuid.uuid4())
    _run_steps(_backend(url), book_id)
    flow_detail = _book(_stock(url), book_id)
    fresh = _backend(url)  # another process's, say
    listings = []

    def count(conn, cursor, statement, *args):
        if statement.startswith('SELECT atomdetails.uuid'):
            listings.append(statement)
    sa.event.listen(fresh.engine, 'before_cursor_execute', count)
    with contextlib.closing(fresh.get_connection()) as conn:
        for state in (tf_states.RUNNING, tf_states.SUCCESS):
            flow_detail.state = state
            conn.update_flow_details(flow_detail)
    assert len(listings) == 1
    final = _book(_stock(url), book_id)
    assert final.state == tf_states.SUCCESS
    assert len(list(final)) == len(list(flow_detail))


def test_atoms_another_writer_added_are_not_inserted_twice(url, monkeypatch):
    """Once the flow is read back, what this process knew of its atoms is
    forgotten: an atom another writer saved meanwhile is not inserted again
    (the database would refuse the whole flow write)."""
    monkeypatch.setenv(LOG_ENV, os.devnull)
    backend = _backend(url)
    book_id = str(uuid.uuid4())
    _run_steps(backend, book_id)
    other = _stock(url)
    extra = tf_models.TaskDetail('extra', str(uuid.uuid4()))
    with contextlib.closing(other.get_connection()) as conn:
        flow_detail = list(conn.get_logbook(book_id))[0]
        flow_detail.add(extra)
        conn.update_flow_details(flow_detail)
    other.close()
    flow_detail = _book(backend, book_id)
    flow_detail.state = tf_states.REVERTED
    with contextlib.closing(backend.get_connection()) as conn:
        conn.update_flow_details(flow_detail)
    final = _book(_stock(url), book_id)
    assert final.state == tf_states.REVERTED
    assert [ad.uuid for ad in final if ad.name == 'extra'] == [extra.uuid]


def test_bench_persistence_measures_all_three_modes_and_the_engine_alone():
    # As a user runs it: ferryman-bench, in a process of its own.
    from ferryman.bench import persistence as bench_persistence
    cli = os.path.join(os.path.dirname(sys.executable), 'ferryman-bench')
    done = subprocess.run([cli, 'persistence', '--migrations', '2',
                           '--json'], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report['tasks_per_flow'] == 11
    sql = report['sql_per_migration']
    # Only the durable flow saves atoms; the bare calls touch no flow at all.
    assert sql['durable']['statements'] > sql['in-memory']['statements'] > \
        sql['bare']['statements']
    assert sql['durable']['commits'] > sql['in-memory']['commits']
    assert all(report['median_ms'][m] > 0 for m in bench_persistence.MODES)
    assert 0 < report['cpu_engine_alone_ms'] < report['cpu_median_ms']['in-memory']


@pytest.mark.parametrize('migrations', [0, -1, 2.5, True, '3'])
def test_bench_persistence_refuses_a_bad_count(migrations):
    from ferryman.bench import persistence as bench_persistence
    with pytest.raises(exception.InvalidArgument) as err:
        bench_persistence.run(migrations=migrations)
    assert repr(migrations) in str(err.value)
