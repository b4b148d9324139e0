"""The tree's import rules: each concern in its folder, each depending only downward.

Every import counts, those inside functions too (they once hid a cycle between the
configuration and the services).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ('ferryman', 'conductor', 'compute_agent', 'flows')

# Who may import whom, by prefix; the first matching prefix of the importer rules.
# The services and the flows never reach the simulated cloud, the benchmarks, the test
# harness or the entry points, and the shared library reaches nothing but itself.
# A service reaches the other only through that one's RPC API.
SERVICES = ('conductor', 'compute_agent', 'flows', 'ferryman.common')
ALLOWED = [
    ('ferryman.common', ('ferryman.common',)),
    # The flows run in the conductor and use two of its leaf modules: the steering
    # policy (pure) and the crash points; neither imports anything but the library.
    ('flows', ('flows', 'ferryman.common', 'conductor.policy', 'conductor.crash')),
    ('conductor', ('conductor', 'flows', 'ferryman.common', 'compute_agent.rpcapi')),
    ('compute_agent', ('compute_agent', 'ferryman.common', 'conductor.rpcapi')),
    ('ferryman.sim', SERVICES + ('ferryman.sim',)),
    ('ferryman.cmd', SERVICES + ('ferryman.sim', 'ferryman.cmd')),
    ('ferryman.testing', SERVICES + ('ferryman.sim', 'ferryman.testing')),
    ('ferryman.bench', SERVICES + ('ferryman.sim', 'ferryman.testing',
                                   'ferryman.cmd', 'ferryman.bench')),
    ('ferryman', ('ferryman',)),
]


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def project_sources():
    return {_module_name(p): p.read_text()
            for package in PACKAGES for p in (ROOT / package).rglob('*.py')}


def imports(sources):
    """module -> the project modules it imports (anywhere in its text)."""
    known = set(sources)
    graph = {}
    for module, text in sources.items():
        found = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # A submodule if the name is one, else the module the name is in.
                names = [node.module + '.' + alias.name for alias in node.names]
            else:
                continue
            for name in names:
                # The longest project module the name starts with.
                while name and name not in known:
                    name = name.rpartition('.')[0]
                if name and name != module:
                    found.add(name)
        graph[module] = found
    return graph


def _within(module, prefix):
    return module == prefix or module.startswith(prefix + '.')


def forbidden(graph):
    """(importer, imported) pairs the layering refuses."""
    bad = []
    for module, targets in sorted(graph.items()):
        allowed = next(a for p, a in ALLOWED if _within(module, p))
        for target in sorted(targets):
            # The top package's __init__ (warning filters) is anyone's.
            if target != 'ferryman' and not any(_within(target, a) for a in allowed):
                bad.append((module, target))
    return bad


def cycles(graph):
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_tree_keeps_its_layers():
    assert forbidden(imports(project_sources())) == []


def test_no_module_imports_form_a_cycle():
    assert cycles(imports(project_sources())) == []


@pytest.mark.parametrize('module, line', [
    ('conductor.manager', 'from ferryman.testing import cluster'),
    ('compute_agent.manager', 'from ferryman.sim import cloud'),
    ('flows.block', 'import conductor.scheduler'),
    ('conductor.scheduler', 'from compute_agent.virt import fake'),
    ('compute_agent.manager', 'from conductor.db import api'),
    ('ferryman.common.conf', '    from conductor import conf'),
    ('ferryman.common.rpc', 'from ferryman.bench import drain'),
])
def test_a_forbidden_import_is_caught(module, line):
    sources = project_sources()
    assert not [t for m, t in forbidden(imports(sources)) if m == module]
    sources[module] += '\n\ndef f():\n    %s\n' % line.strip()
    assert [t for m, t in forbidden(imports(sources))
            if m == module and _within(t, line.split()[1])]


def test_a_cycle_is_caught():
    sources = project_sources()
    sources['ferryman.common.exception'] += '\n\ndef f():\n    from ferryman.common import rpc\n'
    assert any('ferryman.common.exception' in group
               for group in cycles(imports(sources)))


def test_the_conductor_modules_flows_use_are_leaves():
    graph = imports(project_sources())
    for leaf in ('conductor.policy', 'conductor.crash'):
        assert all(_within(t, 'ferryman.common') for t in graph[leaf]), leaf


def test_every_module_is_ruled():
    for module in project_sources():
        assert any(_within(module, p) for p, _ in ALLOWED), module
