"""block-storage: every disk is a volume on shared block storage, connected on the
destination before the copy and disconnected from the source after it."""

from flows import common
from flows import constants as c
from flows.tasks import compute


def get_flow():
    return common.live_migration_flow(
        c.BLOCK_STORAGE_FLOW,
        compute.ConnectVolumes(),
        compute.PlugNetworking())
