"""block: local disks, copied by the hypervisor along with memory."""

from flows import common
from flows import constants as c
from flows.tasks import compute


def get_flow():
    return common.live_migration_flow(
        c.BLOCK_FLOW,
        compute.CreateLocalDisks(),
        compute.PlugNetworking())
