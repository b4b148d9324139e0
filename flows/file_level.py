"""file-level: the instance directory is on shared storage; nothing is copied but
memory, and nothing shared is ever created or deleted."""

from flows import common
from flows import constants as c
from flows.tasks import compute


def get_flow():
    return common.live_migration_flow(
        c.FILE_LEVEL_FLOW,
        compute.PlugNetworking())
