"""evacuation: a dead host's guest rebuilt on another host.

One factory, its argument how the guest comes back (vocabulary.EVACUATE_*,
saved with the flow so a resumed flow is rebuilt the same): the preparation
differs, nothing else. The source is never called: it is dead, and fences the
guest itself when it returns (compute_agent.manager).
"""

from taskflow.patterns import linear_flow

from ferryman.common import vocabulary as vocab
from flows import common
from flows import constants as c
from flows.tasks import compute
from flows.tasks import database


def _prepare_tasks(evacuation_storage):
    if evacuation_storage == vocab.EVACUATE_SHARED:
        # The same files, seen from the destination: nothing to make.
        return [compute.PlugNetworking()]
    if evacuation_storage == vocab.EVACUATE_VOLUMES:
        return [compute.ConnectVolumes(), compute.PlugNetworking()]
    if evacuation_storage == vocab.EVACUATE_REBUILD:
        return [compute.RebuildDisks(), compute.PlugNetworking()]
    raise ValueError('no evacuation of storage %r' % (evacuation_storage,))


def get_flow(evacuation_storage):
    return linear_flow.Flow(c.EVACUATION_FLOW).add(
        common.accept_subflow(),
        # Claim, check and prepare one candidate; a failed attempt undoes
        # itself and the next candidate is tried.
        linear_flow.Flow(c.PLACE_SUBFLOW, retry=database.DestinationRetry()).add(
            database.ClaimResources(),
            compute.CheckRebuild(),
            linear_flow.Flow(c.PREPARE_SUBFLOW).add(
                *_prepare_tasks(evacuation_storage))),
        linear_flow.Flow(c.REBUILD_SUBFLOW).add(
            compute.DefineGuest(),
            compute.StartGuest()),
        # Past the start: forward only.
        linear_flow.Flow(c.FINISH_SUBFLOW).add(
            database.FinishEvacuation()))
