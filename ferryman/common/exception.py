"""Errors that cross RPC boundaries.

oslo.messaging re-raises a remote exception as the same class when its module is in
``allowed_remote_exmods``; every error a caller may see lives here so the CLI can show
its message unchanged.

Callers that act on an error (a drain tries a guest again when no host had room)
test its ``kind``, never its message: a message may be reworded. A migration that
failed keeps the kind of its error (``error_kind``).
"""

# No host has room for the guest now; may change as other guests move or leave.
NO_ROOM = 'no-room'

SHOWN = 120  # characters of a caller's value shown in an error


def shown(value):
    """A value as an error shows it: its repr, cut short when long."""
    text = repr(value)
    if len(text) > SHOWN:
        text = '%s... (%d characters)' % (text[:SHOWN], len(text))
    return text


class FerrymanError(Exception):
    msg_fmt = "An unknown error occurred."
    code = 500
    kind = None

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if message is None:
            message = self.msg_fmt % kwargs
        self.message = message
        super().__init__(message)


class Invalid(FerrymanError):
    msg_fmt = "Invalid input: %(reason)s"
    code = 400


class InvalidArgument(Invalid):
    msg_fmt = "Invalid value %(value)r for %(name)s: %(reason)s"


class NotFound(FerrymanError):
    code = 404


class InstanceNotFound(NotFound):
    msg_fmt = "Instance %(instance)r not found."


class HostNotFound(NotFound):
    msg_fmt = "Host %(host)r not found."


class MigrationNotFound(NotFound):
    msg_fmt = "Migration %(migration)r not found."


class Conflict(FerrymanError):
    code = 409


class InstanceNotRunning(Conflict):
    msg_fmt = ("Instance %(instance)r is %(power_state)s, not running; only running "
               "guests can be live-migrated.")


class InstanceAlreadyMigrating(Conflict):
    msg_fmt = "Instance %(instance)r is already being migrated by migration %(migration)s."


class DestinationSameAsSource(Invalid):
    msg_fmt = "Destination host %(host)r is the instance's current host."


class HostUnavailable(Conflict):
    msg_fmt = "Host %(host)r cannot take migrations: %(reason)s."


class InsufficientCapacity(Conflict):
    kind = NO_ROOM
    msg_fmt = ("Host %(host)r lacks capacity for instance %(instance)r: %(resource)s "
               "needs %(requested)s, %(free)s free.")


class NoValidHost(Conflict):
    kind = NO_ROOM
    msg_fmt = "No valid destination host for instance %(instance)r: %(reason)s"


class IncompatibleHost(Conflict):
    msg_fmt = "Host %(host)r is incompatible with instance %(instance)r: %(reason)s"


class RecordUnreadable(Conflict):
    msg_fmt = ("The record of %(what)s cannot be interpreted (%(problems)s); `ferryman "
               "audit` lists it, and its host's next valid report replaces it.")


class StorageMismatch(Invalid):
    msg_fmt = ("block_migration=%(requested)r contradicts the storage of instance "
               "%(instance)r towards %(host)r: %(reason)s")


class AgentStepFailed(FerrymanError):
    msg_fmt = "Step %(step)s failed on host %(host)s: %(reason)s"


class MigrationJobFailed(FerrymanError):
    msg_fmt = "The hypervisor's migration job for %(instance)s failed: %(reason)s"


class MigrationCancelled(FerrymanError):
    msg_fmt = "Migration %(migration)s was aborted on request."


class CannotAbort(Conflict):
    msg_fmt = "Migration %(migration)s cannot be aborted: %(reason)s."


class CannotForceComplete(Conflict):
    msg_fmt = "Migration %(migration)s cannot be forced to complete: %(reason)s."


class CannotForceNested(Conflict):
    msg_fmt = ("Cannot force instance %(instance)r onto host %(host)r: its allocation "
               "spans %(count)d resource providers (%(providers)s) and a forced "
               "move copies it as it is; name the host without force, or let the "
               "scheduler place it.")


class CannotEvacuate(Conflict):
    msg_fmt = "Cannot evacuate instance %(instance)r from host %(host)r: %(reason)s."


class SourceHostUp(CannotEvacuate):
    msg_fmt = ("Cannot evacuate instance %(instance)r: its host %(host)r is "
               "%(state)s; evacuate only from a host whose agent is down (not "
               "reported within %(down_after)s s) or that an operator forced down "
               "(ferryman host force-down %(host)s).")


class ImageMissing(CannotEvacuate):
    msg_fmt = ("Cannot evacuate instance %(instance)r to %(host)r: its disks are "
               "local to the dead host %(source)r and it has no image reference "
               "in its metadata to rebuild it from.")


class DrainInProgress(Conflict):
    msg_fmt = "Host %(host)r is already being drained (drain %(drain)s)."


class DrainNotFound(NotFound):
    msg_fmt = "Drain %(drain)r not found."


class NotAuthenticated(FerrymanError):
    msg_fmt = "Refused %(method)s for host %(shown_host)s: %(reason)s"
    code = 401

    def __init__(self, message=None, **kwargs):
        # The host is the caller's word, not yet checked: shown cut short. (The
        # kwargs cross RPC and rebuild this error there, so they gain nothing.)
        kwargs.pop('shown_host', None)
        super().__init__(message, shown_host=shown(kwargs.get('host')), **kwargs)


def kind_named(class_names):
    """The kind of the first error class named that has one, or None.

    Fully qualified names, most derived first: how a TaskFlow failure lists its
    exception's classes, all that is left of the exception once the failure was
    saved and loaded again.
    """
    kinds = {}
    todo = [FerrymanError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        kinds['%s.%s' % (cls.__module__, cls.__qualname__)] = cls.kind
    return next((kinds[n] for n in class_names if kinds.get(n)), None)
