"""Live-migration flows, one factory per subtype, built from shared subflows."""

from ferryman.common import vocabulary as vocab

# Factories by subtype, as importable names: a resumed flow is rebuilt from these.
FACTORIES = {
    vocab.BLOCK: 'flows.block.get_flow',
    vocab.FILE_LEVEL: 'flows.file_level.get_flow',
    vocab.BLOCK_STORAGE: 'flows.block_storage.get_flow',
}


def build(subtype):
    """A fresh flow of the subtype, from its factory."""
    from oslo_utils import importutils
    return importutils.import_class(FACTORIES[subtype])()


def iter_tasks(flow):
    """The flow's tasks in order, through every nested subflow."""
    for node, _ in flow.iter_nodes():
        if hasattr(node, 'iter_nodes'):
            yield from iter_tasks(node)
        else:
            yield node
