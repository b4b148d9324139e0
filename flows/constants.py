"""Store keys and atom names.

A store key's value is the ``execute()`` argument that consumes it. Atom names link
saved state to atoms on resume: never change one, never derive one from data.
"""

# Store keys.
MIGRATION_ID = 'migration_id'
INSTANCE = 'instance'
SOURCE = 'source'
DESTINATION = 'destination'
SUBTYPE = 'subtype'
SOURCE_INFO = 'source_info'
# Destinations to try in order (one for an admin-chosen or forced host).
CANDIDATES = 'candidates'
STORE_KEYS = (MIGRATION_ID, INSTANCE, SOURCE, DESTINATION, SUBTYPE, SOURCE_INFO,
              CANDIDATES)
# Evacuation: how the guest comes back (vocabulary.EVACUATE_*); a factory
# argument of its flow, and the store's.
EVACUATION_STORAGE = 'evacuation_storage'
# The destination of the current attempt, provided by DESTINATION_RETRY; tasks
# take it as their ``destination`` argument.
PLACED_DESTINATION = 'placed_destination'

# Flows.
BLOCK_FLOW = 'block-live-migration'
FILE_LEVEL_FLOW = 'file-level-live-migration'
BLOCK_STORAGE_FLOW = 'block-storage-live-migration'
ACCEPT_SUBFLOW = 'accept'
PLACE_SUBFLOW = 'place-on-destination'
CHECK_SUBFLOW = 'check-hosts'
PREPARE_SUBFLOW = 'prepare-destination'
MIGRATE_SUBFLOW = 'migrate'
FINISH_SUBFLOW = 'finish'
EVACUATION_FLOW = 'evacuation'
REBUILD_SUBFLOW = 'rebuild'

# Retry controllers.
DESTINATION_RETRY = 'try-destinations'

# Tasks.
MIGRATION_SENTINEL = 'migration-sentinel'
CLAIM_RESOURCES = 'claim-resources'
CHECK_DESTINATION = 'check-destination'
CHECK_SOURCE = 'check-source'
REMOVE_PROBE = 'remove-probe'
CREATE_LOCAL_DISKS = 'create-local-disks'
CONNECT_VOLUMES = 'connect-volumes'
PLUG_NETWORKING = 'plug-networking'
START_MIGRATION = 'start-migration'
MONITOR_MIGRATION = 'monitor-migration'
POST_MIGRATION_SOURCE = 'post-migration-source'
POST_MIGRATION_DESTINATION = 'post-migration-destination'
FINISH_MIGRATION = 'finish-migration'
CHECK_REBUILD = 'check-rebuild'
REBUILD_DISKS = 'rebuild-disks'
DEFINE_GUEST = 'define-guest'
START_GUEST = 'start-guest'
FINISH_EVACUATION = 'finish-evacuation'
