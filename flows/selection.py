"""Which subtype a migration is, from the storage probe and the caller's wish."""

from ferryman.common import exception
from ferryman.common import vocabulary as vocab
from flows import states

BLOCK_MIGRATION_CHOICES = ('auto', 'true', 'false')


def normalize_block_migration(value):
    """'auto', 'true' or 'false' from what a caller may send; refuse anything else."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str) and value.lower() in BLOCK_MIGRATION_CHOICES:
        return value.lower()
    raise exception.InvalidArgument(
        name='block_migration', value=value,
        reason='expected one of auto, true, false')


def choose_subtype(requested, facts, instance, host):
    """The subtype the storage allows; an explicit request that contradicts it is
    refused. ``facts`` is the source's answer to the probe (check_source)."""
    # Volumes first: only block-storage connects them on the destination and
    # lets them go on the source, shared instance directory or not.
    if facts['volume_backed']:
        subtype, why = states.BLOCK_STORAGE, 'every disk is a volume'
    elif facts['shared_instance_path']:
        subtype, why = states.FILE_LEVEL, 'the instance directory is shared'
    else:
        subtype, why = states.BLOCK, 'its disks are local to the source'
    if requested == 'true' and subtype != states.BLOCK:
        raise exception.StorageMismatch(requested=requested, instance=instance,
                                        host=host, reason=why)
    if requested == 'false' and subtype == states.BLOCK:
        raise exception.StorageMismatch(requested=requested, instance=instance,
                                        host=host, reason=why)
    return subtype


def probe_token(migration_id):
    """The probe file's name is derived from the migration: a re-run task finds it."""
    return migration_id.replace('-', '')


def evacuation_storage(instance, facts, host, source):
    """How the guest comes back on ``host`` (vocabulary.EVACUATE_*), from the
    destination's answer to check_rebuild; a guest whose local disks must be
    rebuilt and that has no image to rebuild them from is refused."""
    if instance['storage'] == 'volume':
        return vocab.EVACUATE_VOLUMES
    if facts['shared_instance_path']:
        return vocab.EVACUATE_SHARED
    if not instance.get('image'):
        raise exception.ImageMissing(instance=instance['uuid'], host=host,
                                     source=source)
    return vocab.EVACUATE_REBUILD
