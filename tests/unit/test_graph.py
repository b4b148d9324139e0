import pydot
import pytest
from taskflow import flow as tf_flow

import flows
from ferryman.common import exception
from ferryman.cmd import graph
from flows import constants as c
from flows import states

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _atoms(flow):
    """Every flow and task name, in walk order."""
    names = [flow.name]
    for child, _meta in flow.iter_nodes():
        names += _atoms(child) if isinstance(child, tf_flow.Flow) else [child.name]
    return names


def _tasks(flow):
    """Task names in execution order (every flow here is linear)."""
    names = []
    for child, _meta in flow.iter_nodes():
        names += _tasks(child) if isinstance(child, tf_flow.Flow) else [child.name]
    return names


def _parse(source):
    graphs = pydot.graph_from_dot_data(source)
    assert graphs and len(graphs) == 1
    return graphs[0]


def _nodes(g):
    """Nodes by unquoted name, searching clusters; legend samples left out."""
    found = {}
    for sub in g.get_subgraphs():
        if sub.get_name().strip('"') != 'cluster_legend':
            found.update(_nodes(sub))
    for node in g.get_nodes():
        name = node.get_name().strip('"')
        if name not in ('node', 'edge', 'graph'):
            found[name] = node
    return found


def _edges(g):
    return [(e.get_source().strip('"'), e.get_destination().strip('"'))
            for e in g.get_edges()]


def _failed_history(flow_name):
    # What the conductor records when check-source fails: the engine reverts the
    # failed task too, then everything that ran before it.
    ev = [(flow_name, 'RUNNING'),
          (c.MIGRATION_SENTINEL, 'RUNNING'), (c.MIGRATION_SENTINEL, 'SUCCESS'),
          (c.CLAIM_RESOURCES, 'RUNNING'), (c.CLAIM_RESOURCES, 'SUCCESS'),
          (c.CHECK_DESTINATION, 'RUNNING'), (c.CHECK_DESTINATION, 'SUCCESS'),
          (c.CHECK_SOURCE, 'RUNNING'), (c.CHECK_SOURCE, 'FAILURE'),
          (c.CHECK_SOURCE, 'REVERTING'), (c.CHECK_SOURCE, 'REVERTED'),
          (c.CHECK_DESTINATION, 'REVERTING'), (c.CHECK_DESTINATION, 'REVERTED'),
          (c.CLAIM_RESOURCES, 'REVERTING'), (c.CLAIM_RESOURCES, 'REVERT_FAILURE'),
          (c.MIGRATION_SENTINEL, 'REVERTING'),
          (flow_name, 'REVERTED')]
    return [{'atom': a, 'state': s, 'host': None, 'started_at': None,
             'ended_at': None, 'error': 'boom' if s == 'FAILURE' else None}
            for a, s in ev]


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_text_lists_every_atom_once(subtype):
    out = graph.text(subtype)
    first_words = [line.split()[0] for line in out.splitlines()]
    for name in _atoms(flows.build(subtype)):
        assert first_words.count(name) == 1, name


def test_text_shows_host_revert_and_state():
    out = graph.text(states.BLOCK, {c.CHECK_SOURCE: 'FAILURE'})
    lines = {line.split()[0]: line.split() for line in out.splitlines()}
    assert lines[c.CHECK_DESTINATION][1:] == ['destination', '(revert)', '-']
    assert lines[c.CHECK_SOURCE][1:] == ['source', 'FAILURE']
    assert '(revert)' not in graph.text(states.BLOCK).split(c.FINISH_MIGRATION)[1]


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_dot_has_a_node_per_task_and_flow_order(subtype):
    flow = flows.build(subtype)
    order = _tasks(flow)
    g = _parse(graph.dot(subtype))
    assert sorted(_nodes(g)) == sorted(order)
    assert _edges(g) == list(zip(order, order[1:]))
    assert order[:3] == [c.MIGRATION_SENTINEL, c.CLAIM_RESOURCES, c.CHECK_DESTINATION]
    assert order[-1] == c.FINISH_MIGRATION


def test_dot_clusters_and_revert_marker():
    g = _parse(graph.dot(states.BLOCK))

    def clusters(parent):  # nested: checks and preparation are in the retried one
        for sub in parent.get_subgraphs():
            yield sub
            yield from clusters(sub)

    labels = {s.get_label().strip('"') for s in clusters(g)}
    assert {c.ACCEPT_SUBFLOW, c.PLACE_SUBFLOW, c.CHECK_SUBFLOW, c.PREPARE_SUBFLOW,
            c.MIGRATE_SUBFLOW, c.FINISH_SUBFLOW} <= labels
    nodes = _nodes(g)
    assert nodes[c.CLAIM_RESOURCES].get('peripheries') == '2'
    assert nodes[c.FINISH_MIGRATION].get('peripheries') is None
    assert nodes[c.CHECK_SOURCE].get_label().strip('"') == 'check-source\\nsource'


def test_atom_states_keeps_failure_over_its_revert():
    result = graph.atom_states(_failed_history(c.BLOCK_FLOW))
    assert result == {
        c.BLOCK_FLOW: 'REVERTED', c.MIGRATION_SENTINEL: 'REVERTING',
        c.CLAIM_RESOURCES: 'REVERT_FAILURE', c.CHECK_DESTINATION: 'REVERTED',
        c.CHECK_SOURCE: 'FAILURE'}


def test_atom_states_retry_replaces_failure():
    events = [{'atom': 'x', 'state': s} for s in
              ('RUNNING', 'FAILURE', 'REVERTING', 'REVERTED', 'RUNNING', 'SUCCESS')]
    assert graph.atom_states(events) == {'x': 'SUCCESS'}


def test_dot_fills_nodes_by_state():
    st = graph.atom_states(_failed_history(c.BLOCK_FLOW))
    g = _parse(graph.dot(states.BLOCK, st))
    nodes = _nodes(g)
    fill = {name: node.get('fillcolor') for name, node in nodes.items()}
    assert fill[c.CHECK_SOURCE] == 'red'
    assert fill[c.CHECK_DESTINATION] == graph.COLORS['REVERTED']
    assert fill[c.CLAIM_RESOURCES] == graph.COLORS['REVERT_FAILURE']
    assert fill[c.MIGRATION_SENTINEL] == graph.COLORS['REVERTING']
    assert fill[c.FINISH_MIGRATION] == graph.COLORS[graph.NOT_REACHED]
    legend = [s for s in g.get_subgraphs()
              if s.get_name().strip('"') == 'cluster_legend'][0]
    # "has revert", then one sample per colour (RUNNING and REVERTING share one).
    assert len(legend.get_nodes()) == 1 + len(set(graph.COLORS.values()))
    assert '[REVERTED]' in g.get_label()


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_render_svg(subtype):
    data = graph.render(subtype, 'svg')
    assert isinstance(data, bytes)
    assert data.startswith(b'<?xml') or b'<svg' in data


def test_render_png_with_states():
    data = graph.render(states.BLOCK, 'png',
                        graph.atom_states(_failed_history(c.BLOCK_FLOW)))
    assert data.startswith(PNG_MAGIC)


def test_render_bad_format():
    with pytest.raises(exception.InvalidArgument) as err:
        graph.render(states.BLOCK, 'gif')
    assert "'gif'" in str(err.value)
    assert err.value.kwargs['name'] == 'format'


def test_render_without_graphviz(monkeypatch):
    monkeypatch.setattr(graph.shutil, 'which', lambda prog: None)
    with pytest.raises(exception.FerrymanError, match='graphviz'):
        graph.render(states.BLOCK, 'svg')


@pytest.mark.parametrize('subtype', states.SUBTYPES)
def test_machine_drawings_show_the_subtypes_own_states(subtype):
    machine = states.MACHINES[subtype]
    g = _parse(graph.machine_dot(subtype))
    assert set(_nodes(g)) == set(machine.states)
    assert sorted((e.get_source().strip('"'), e.get_label().strip('"'),
                   e.get_destination().strip('"')) for e in g.get_edges()) == \
        sorted(machine)
    text = graph.machine_text(subtype)
    for state in machine.states:
        assert state in text.splitlines() or state + '  (end)' in text.splitlines()
    assert (states.COPYING_DISKS in text) == (subtype == states.BLOCK)
    assert (states.CONNECTING_VOLUMES in text) == (subtype == states.BLOCK_STORAGE)
    assert graph.machine_render(subtype, 'svg').startswith(b'<?xml')


def test_cli_draws_a_subtypes_machine(capsys):
    from ferryman.cmd import cli
    assert cli.main(['flow', 'states', states.BLOCK_STORAGE]) == 0
    out = capsys.readouterr().out
    assert out == graph.machine_text(states.BLOCK_STORAGE)
    assert '  connect_volumes -> %s' % states.CONNECTING_VOLUMES in out
