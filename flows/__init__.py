"""Migration flows, one factory per subtype (and one for evacuation), built
from shared subflows."""

from ferryman.common import vocabulary as vocab

# Factories by subtype, as importable names: a resumed flow is rebuilt from these.
FACTORIES = {
    vocab.BLOCK: 'flows.block.get_flow',
    vocab.FILE_LEVEL: 'flows.file_level.get_flow',
    vocab.BLOCK_STORAGE: 'flows.block_storage.get_flow',
    vocab.EVACUATION: 'flows.evacuate.get_flow',
}


def factory_kwargs(store):
    """The factory's arguments for a migration's store: an evacuation's flow
    depends on how the guest comes back; saved with the flow (TaskFlow's
    factory details) so a resume rebuilds the same one."""
    if store.get('subtype') == vocab.EVACUATION:
        return {'evacuation_storage': store['evacuation_storage']}
    return {}


def build(subtype, **kwargs):
    """A fresh flow of the subtype, from its factory (an evacuation's: of
    every kind, the shared one when not given)."""
    from oslo_utils import importutils
    if subtype == vocab.EVACUATION:
        kwargs.setdefault('evacuation_storage', vocab.EVACUATE_SHARED)
    return importutils.import_class(FACTORIES[subtype])(**kwargs)


def iter_tasks(flow):
    """The flow's tasks in order, through every nested subflow."""
    for node, _ in flow.iter_nodes():
        if hasattr(node, 'iter_nodes'):
            yield from iter_tasks(node)
        else:
            yield node
