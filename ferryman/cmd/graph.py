"""Pictures of a migration flow: a text tree, DOT source, or SVG/PNG via Graphviz.

With ``states`` (atom name -> TaskFlow state, see :func:`atom_states`) each task
shows how far a migration got, so an operator can see where it failed and what
was rolled back. The ``machine_*`` functions draw a subtype's state machine: the
statuses a migration of that subtype passes and the events between them.
"""

import shutil

import pydot
from taskflow import engines
from taskflow import flow as tf_flow
from taskflow import states as tf
from taskflow import task as tf_task

import flows
from ferryman.common import exception
from flows import states as migration_states

FORMATS = ('svg', 'png')

NOT_REACHED = 'not reached'
# Fill colour per state; anything unlisted (PENDING, IGNORE, ...) counts as not reached.
COLORS = {
    tf.SUCCESS: 'palegreen',
    tf.FAILURE: 'red',
    tf.REVERTED: 'orange',
    tf.REVERT_FAILURE: 'darkred',
    tf.RUNNING: 'yellow',
    tf.REVERTING: 'yellow',
    NOT_REACHED: 'lightgrey',
}
# Dark fills need light text to stay readable.
_LIGHT_TEXT = {tf.REVERT_FAILURE}


def atom_states(history):
    """Atom name -> last state reached, from task history events in order.

    One exception: TaskFlow reverts the task that failed too, so its last event is
    REVERTED like every other undone task. A FAILURE is kept over the REVERTING/
    REVERTED that follow it, otherwise the picture cannot show where a migration
    broke; a later RUNNING (retry, resume) or REVERT_FAILURE still replaces it.
    """
    result = {}
    for event in history:
        atom, state = event['atom'], event['state']
        if (result.get(atom) == tf.FAILURE
                and state in (tf.REVERTING, tf.REVERTED)):
            continue
        result[atom] = state
    return result


def _has_revert(atom):
    return type(atom).revert is not tf_task.Task.revert


def _walk(flow, depth=0):
    """(depth, item) for the flow and everything in it, in insertion order."""
    yield depth, flow
    for child, _meta in flow.iter_nodes():
        if isinstance(child, tf_flow.Flow):
            yield from _walk(child, depth + 1)
        else:
            yield depth + 1, child


def text(subtype, states=None):
    """An indented tree: flows as headings, one task a line with where it runs."""
    rows = list(_walk(flows.build(subtype)))
    width = max(2 * depth + len(item.name) for depth, item in rows)
    lines = []
    for depth, item in rows:
        head = '  ' * depth + item.name
        state = states.get(item.name) if states is not None else None
        if isinstance(item, tf_flow.Flow):
            # Only the top flow records its own transitions; subflows have none.
            lines.append('%s  [%s]' % (head, state) if state else head)
            continue
        cols = [head.ljust(width), item.runs_on.ljust(11),
                '(revert)' if _has_revert(item) else '        ']
        if states is not None:
            cols.append(state or '-')
        lines.append('  '.join(cols).rstrip())
    return '\n'.join(lines) + '\n'


def _task_edges(flow):
    """(task, task) ordering pairs from the compiled execution graph.

    The graph also holds a start and an end node per (sub)flow; edges are followed
    through those, so only the order between tasks remains.
    """
    engine = engines.load(flow)
    engine.compile()
    graph = engine.compilation.execution_graph
    edges = []
    for node, data in graph.nodes(data=True):
        if data['kind'] != 'task':
            continue
        todo, seen = list(graph.successors(node)), set()
        while todo:
            nxt = todo.pop()
            if nxt in seen:
                continue
            seen.add(nxt)
            if graph.nodes[nxt]['kind'] == 'task':
                edges.append((node.name, nxt.name))
            else:
                todo.extend(graph.successors(nxt))
    return edges


def _quote(name):
    return '"%s"' % name


def _task_node(task, states):
    attrs = {'label': '"%s\\n%s"' % (task.name, task.runs_on),
             'shape': 'box', 'style': '"rounded,filled"', 'fillcolor': 'white'}
    if _has_revert(task):
        attrs['peripheries'] = 2
    if states is not None:
        state = states.get(task.name)
        state = state if state in COLORS else NOT_REACHED
        attrs['fillcolor'] = COLORS[state]
        if state in _LIGHT_TEXT:
            attrs['fontcolor'] = 'white'
    return pydot.Node(_quote(task.name), **attrs)


def _legend(states):
    legend = pydot.Cluster('legend', label='legend', style='dashed', fontsize=10)
    samples = [('revert', {'peripheries': 2, 'label': '"has revert"',
                           'style': 'rounded'})]
    if states is not None:
        for state, color in COLORS.items():
            if state == tf.REVERTING:
                continue  # same colour as RUNNING, labelled there
            label = 'RUNNING / REVERTING' if state == tf.RUNNING else state
            samples.append((state, {
                'style': '"rounded,filled"', 'fillcolor': color, 'label': _quote(label),
                'fontcolor': 'white' if state in _LIGHT_TEXT else 'black'}))
    prev = None
    for key, attrs in samples:
        node_id = _quote('legend-' + key)
        legend.add_node(pydot.Node(node_id, shape='box', fontsize=10, **attrs))
        if prev is not None:
            # Invisible edges only stack the samples in a column.
            legend.add_edge(pydot.Edge(prev, node_id, style='invis'))
        prev = node_id
    return legend


def _add_flow(parent, flow, states, counter):
    for child, _meta in flow.iter_nodes():
        if isinstance(child, tf_flow.Flow):
            counter[0] += 1
            # Left-justified so the edges entering the cluster miss its label.
            cluster = pydot.Cluster(str(counter[0]), label=_quote(child.name),
                                    labeljust='l', style='rounded', color='grey40')
            _add_flow(cluster, child, states, counter)
            parent.add_subgraph(cluster)
        else:
            parent.add_node(_task_node(child, states))


def _build(subtype, states):
    flow = flows.build(subtype)
    label = flow.name
    if states is not None and states.get(flow.name):
        label = '%s [%s]' % (flow.name, states[flow.name])
    graph = pydot.Dot(_quote(flow.name), graph_type='digraph', rankdir='TB',
                      label=_quote(label), labelloc='t', fontsize=16,
                      fontname='Helvetica')
    graph.set_node_defaults(fontname='Helvetica')
    graph.set_graph_defaults(fontname='Helvetica')
    _add_flow(graph, flow, states, [0])
    for src, dst in _task_edges(flow):
        graph.add_edge(pydot.Edge(_quote(src), _quote(dst)))
    graph.add_subgraph(_legend(states))
    return graph


def dot(subtype, states=None):
    """DOT source: a cluster per subflow, tasks joined in execution order."""
    return _build(subtype, states).to_string()


def render(subtype, fmt, states=None):
    """The picture as ``fmt`` ('svg' or 'png') bytes, drawn by Graphviz ``dot``."""
    return _create(_build(subtype, states), fmt)


def _create(graph, fmt):
    if fmt not in FORMATS:
        raise exception.InvalidArgument(
            name='format', value=fmt,
            reason='must be one of %s (or text/dot)' % ', '.join(FORMATS))
    if shutil.which('dot') is None:
        raise exception.FerrymanError(
            "Graphviz 'dot' is not installed (apt-get install graphviz); "
            "use the text or dot format instead")
    return graph.create(prog='dot', format=fmt)


def _transitions(subtype):
    """(state, [(event, next state)]) in the vocabulary's order of states."""
    machine = migration_states.MACHINES[subtype]
    order = migration_states.ACTIVE + migration_states.TERMINAL
    return [(state, sorted((event, dst) for src, event, dst in machine if src == state))
            for state in order if state in machine.states]


def machine_text(subtype):
    """Each status of the subtype's machine and the events that leave it."""
    lines = ['%s migration states' % subtype]
    for state, out in _transitions(subtype):
        lines.append(state + ('' if out else '  (end)'))
        lines.extend('  %s -> %s' % (event, dst) for event, dst in out)
    return '\n'.join(lines) + '\n'


def _machine(subtype):
    graph = pydot.Dot(_quote('%s migration states' % subtype), graph_type='digraph',
                      rankdir='TB', label=_quote('%s migration states' % subtype),
                      labelloc='t', fontsize=16, fontname='Helvetica')
    graph.set_node_defaults(fontname='Helvetica')
    graph.set_edge_defaults(fontname='Helvetica', fontsize=10)
    for state, out in _transitions(subtype):
        graph.add_node(pydot.Node(_quote(state), shape='doublecircle' if not out
                                  else 'ellipse'))
        for event, dst in out:
            graph.add_edge(pydot.Edge(_quote(state), _quote(dst), label=_quote(event)))
    return graph


def machine_dot(subtype):
    return _machine(subtype).to_string()


def machine_render(subtype, fmt):
    return _create(_machine(subtype), fmt)
