"""Live-migration flows, one factory per subtype, built from shared subflows."""

# Factories by subtype, as importable names: a resumed flow is rebuilt from these.
FACTORIES = {
    'block': 'flows.block.get_flow',
    'file-level': 'flows.file_level.get_flow',
    'block-storage': 'flows.block_storage.get_flow',
}


def build(subtype):
    """A fresh flow of the subtype, from its factory."""
    from oslo_utils import importutils
    return importutils.import_class(FACTORIES[subtype])()
