"""Subflows every subtype shares. Subtypes differ only in preparing the destination
(and in what the agents do at post, keyed by subtype)."""

from taskflow.patterns import linear_flow

from flows import constants as c
from flows.tasks import compute
from flows.tasks import database


def accept_subflow():
    return linear_flow.Flow(c.ACCEPT_SUBFLOW).add(
        database.MigrationSentinel())


def check_subflow():
    return linear_flow.Flow(c.CHECK_SUBFLOW).add(
        compute.CheckDestination(),
        compute.CheckSource(),
        compute.RemoveProbe())


def migrate_subflow():
    return linear_flow.Flow(c.MIGRATE_SUBFLOW).add(
        compute.StartMigration(),
        compute.MonitorMigration())


def finish_subflow():
    """Past switch-over: forward only."""
    return linear_flow.Flow(c.FINISH_SUBFLOW).add(
        compute.PostMigrationSource(),
        compute.PostMigrationDestination(),
        database.FinishMigration())


def place_subflow(*prepare_tasks):
    """Claim, check and prepare one candidate destination; on a failure, undo
    this attempt (its claim included) and try the next candidate."""
    return linear_flow.Flow(c.PLACE_SUBFLOW,
                            retry=database.DestinationRetry()).add(
        database.ClaimResources(),
        check_subflow(),
        linear_flow.Flow(c.PREPARE_SUBFLOW).add(*prepare_tasks))


def live_migration_flow(name, *prepare_tasks):
    return linear_flow.Flow(name).add(
        accept_subflow(),
        place_subflow(*prepare_tasks),
        migrate_subflow(),
        finish_subflow())
