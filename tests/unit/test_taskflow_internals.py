"""The parts of TaskFlow that are not its public API and that the conductor relies
on, each checked alone: conductor/persistence.py subclasses the SQLAlchemy
backend's private classes and writes their tables directly, and the runner reads
the saved store from the atom TaskFlow's storage keeps it in. A TaskFlow release
that changes any of them fails here, saying what to revisit, before the pin in
setup.cfg is widened."""

import configparser
import importlib.metadata
import inspect
import os

from packaging import requirements
import sqlalchemy as sa
import taskflow.engines
from taskflow import states as tf_states
from taskflow import storage as tf_storage
from taskflow import task
from taskflow.patterns import linear_flow
from taskflow.persistence.backends import impl_memory
from taskflow.persistence.backends import impl_sqlalchemy
from taskflow.persistence.backends.sqlalchemy import tables
from taskflow.persistence import models as tf_models

from conductor import persistence

SETUP_CFG = os.path.join(os.path.dirname(__file__), '..', '..', 'setup.cfg')
REVISIT = 'revisit conductor/persistence.py before widening the pin in setup.cfg'


class _Done(task.Task):
    def execute(self, label):
        return label


class _Fails(task.Task):
    def execute(self):
        raise ValueError('fails on purpose')


def done_flow():
    return linear_flow.Flow('done').add(_Done('done'))


def _taskflow_requirement():
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    reqs = [requirements.Requirement(line) for line in
            cfg['options']['install_requires'].split('\n') if line.strip()]
    (req,) = [r for r in reqs if r.name == 'taskflow']
    return req


def test_setup_cfg_pins_the_installed_taskflow_minor_release():
    req = _taskflow_requirement()
    installed = importlib.metadata.version('taskflow')
    assert installed in req.specifier, (
        'taskflow %s is installed, setup.cfg asks for %s' % (installed, req))
    # A range within one minor release: the next one must be tested here first.
    major, minor = (int(p) for p in installed.split('.')[:2])
    assert '%d.%d.0' % (major, minor + 1) not in req.specifier, (
        'setup.cfg accepts taskflow %s beyond the tested %d.%d' % (
            req.specifier, major, minor))


def test_connection_init_sets_exactly_what_ours_sets(tmp_path):
    """Ours skips TaskFlow's Connection.__init__ (it rebuilds the schema each
    time) and sets its attributes itself: a new one would be missing."""
    stock = impl_sqlalchemy.SQLAlchemyBackend(
        {'connection': 'sqlite:///%s' % (tmp_path / 'stock.sqlite')})
    ours = persistence.Backend(
        {'connection': 'sqlite:///%s' % (tmp_path / 'ours.sqlite')})
    try:
        expected = set(vars(stock.get_connection()))
        got = set(vars(ours.get_connection()))
    finally:
        stock.close()
        ours.close()
    assert got == expected, (
        "TaskFlow's sqlalchemy Connection now sets %s (ours sets %s): %s" % (
            sorted(expected), sorted(got), REVISIT))


def test_backend_keeps_the_state_our_get_connection_uses():
    backend = impl_sqlalchemy.SQLAlchemyBackend({'connection': 'sqlite://'})
    try:
        missing = [name for name in ('_validated', '_max_retries', '_upgrade_lock')
                   if not hasattr(backend, name)]
        assert not missing, 'SQLAlchemyBackend lacks %s: %s' % (missing, REVISIT)
        assert isinstance(backend.engine, sa.engine.Engine), REVISIT
    finally:
        backend.close()


def test_alchemist_converts_atoms_with_a_static_method_on_the_tables():
    found = inspect.getattr_static(impl_sqlalchemy._Alchemist, 'convert_atom_detail')
    assert isinstance(found, staticmethod), (
        '_Alchemist.convert_atom_detail is no longer static: %s' % REVISIT)
    assert list(inspect.signature(impl_sqlalchemy._Alchemist).parameters) == [
        'tables'], REVISIT


def test_overridden_connection_methods_keep_their_parameters():
    for name in ('update_atom_details', 'update_flow_details', 'get_logbook',
                 'get_flows_for_book', 'get_flow_details', 'get_atom_details',
                 'get_atoms_for_flow'):
        theirs = inspect.signature(getattr(impl_sqlalchemy.Connection, name))
        ours = inspect.signature(getattr(persistence._Connection, name))
        assert ours == theirs, 'Connection.%s is now %s: %s' % (name, theirs,
                                                                REVISIT)


def test_every_detail_field_is_a_column_of_its_table():
    """Ours writes to_dict() straight into the tables (an UPDATE's SET clause,
    an INSERT's rows)."""
    tbl = tables.fetch(sa.MetaData())
    atom_columns = set(tbl.atomdetails.c.keys())
    for detail in (tf_models.TaskDetail('t', 'u1'), tf_models.RetryDetail('r', 'u2')):
        fields = set(detail.to_dict()) | {'parent_uuid', 'atom_type'}
        assert fields <= atom_columns, (
            '%s fields %s have no column: %s' % (type(detail).__name__,
                                                 sorted(fields - atom_columns),
                                                 REVISIT))
    flow_fields = set(tf_models.FlowDetail('f', 'u3').to_dict())
    assert flow_fields <= set(tbl.flowdetails.c.keys()), REVISIT


def test_the_store_is_saved_in_the_injector_atom():
    """The runner finds a saved flow's store by the injector atom's name."""
    assert tf_storage.Storage.injector_name.startswith('_TaskFlow_')
    book = tf_models.LogBook('book')
    taskflow.engines.load_from_factory(done_flow, store={'label': 'x'}, book=book,
                                       backend=impl_memory.MemoryBackend(),
                                       engine='serial')
    (flow_detail,) = book
    stores = [ad.results for ad in flow_detail
              if ad.name == tf_storage.Storage.injector_name]
    assert stores == [{'label': 'x'}], (
        'the store is no longer saved in atom %s: revisit runner._saved_store'
        % tf_storage.Storage.injector_name)


def test_engine_sets_progress_right_after_the_states_ours_anticipates(monkeypatch):
    """Ours writes the progress with the state, so that the engine's own
    progress write right after finds nothing to change (persistence._ENGINE_PROGRESS)."""
    writes = []
    real = impl_memory.Connection.update_atom_details

    def recording(self, atom_detail):
        writes.append((atom_detail.name, atom_detail.state,
                       (atom_detail.meta or {}).get('progress')))
        return real(self, atom_detail)

    monkeypatch.setattr(impl_memory.Connection, 'update_atom_details', recording)
    engine = taskflow.engines.load(
        linear_flow.Flow('f').add(_Done('done'), _Fails('fails')),
        store={'label': 'x'}, backend=impl_memory.MemoryBackend(), engine='serial')
    try:
        engine.run()
    except ValueError:
        pass
    entered = set()
    for name in ('done', 'fails'):
        mine = [(state, progress) for atom, state, progress in writes
                if atom == name]
        for i, (state, _progress) in enumerate(mine):
            if state in persistence._ENGINE_PROGRESS and \
                    (i == 0 or mine[i - 1][0] != state):
                entered.add(state)
                assert mine[i + 1] == (state, persistence._ENGINE_PROGRESS[state]), (
                    'after entering %s, TaskFlow wrote %s: %s' % (
                        state, mine[i + 1:i + 3], REVISIT))
    assert entered == set(persistence._ENGINE_PROGRESS), entered
    assert tf_states.REVERTED in entered
