"""ferryman audit: the invariants Ferryman promises, checked against the hosts.

- every guest runs on exactly one host, the one the database names;
- resources held match: each guest's allocation on its host only, plus the claims
  of migrations in flight, nothing for anything else;
- no migration in a non-terminal state without a live owner;
- nothing left behind (instance directories, volume connections, ports) on a host
  that does not run the guest.

Hosts involved in a migration in flight are allowed the in-between states it
implies (an incoming guest, a prepared destination); nothing else is excused.
"""

from oslo_log import log as logging

from flows import states

LOG = logging.getLogger(__name__)

# Every state but incoming means the guest is defined (lives) on that host.
PRESENT = ('running', 'paused', 'blocked', 'shutdown', 'shutoff', 'crashed',
           'suspended', 'unknown')
COMPARED = ('vcpus', 'memory_mb')


def run(db, compute, hosts, owned):
    """Violations as (kind, text) pairs; ``owned``: ids of migrations with a
    live owner (flows this conductor runs or queues for a slot; with a jobboard,
    jobs claimed by any conductor or waiting on the board to be claimed)."""
    violations = []
    instances = {i['uuid']: i for i in db.list_instances()}
    active = [m for m in db.list_migrations() if m['status'] in states.ACTIVE]
    in_flight = {m['instance_uuid']: m for m in active}
    inventories = {}
    for host in hosts:
        try:
            inventories[host['name']] = compute.get_inventory(host['name'])
        except Exception as exc:
            violations.append(('unreachable', 'host %s did not answer: %s' % (
                host['name'], exc)))
    paths = {h['name']: h['instances_path'] for h in hosts}

    # Every guest on exactly one host, the one on record.
    for uuid, inst in instances.items():
        running = sorted(h for h, inv in inventories.items()
                         if inv['guests'].get(uuid) in PRESENT)
        mig = in_flight.get(uuid)
        allowed = {inst['host']} | ({mig['source'], mig['destination']} if mig
                                    else set())
        if len(running) == 0 and len(inventories) == len(hosts):
            violations.append(('guest', 'guest %s (%s) runs on no host' % (
                inst['name'], uuid)))
        elif len(running) > 1 and not (mig and mig['status'] == states.POST_COPY):
            violations.append(('guest', 'guest %s (%s) runs on %d hosts: %s' % (
                inst['name'], uuid, len(running), ', '.join(running))))
        elif running and running[0] not in allowed:
            violations.append(('guest', 'guest %s (%s) runs on %s, recorded on %s'
                               % (inst['name'], uuid, running[0], inst['host'])))

    # Allocations: exactly the guests' own plus in-flight claims.
    expected = {}
    for uuid, inst in instances.items():
        expected[(uuid, inst['host'])] = db.requested(inst, _subtype_for(inst, in_flight))
    for mig in active:
        inst = instances.get(mig['instance_uuid'])
        if inst is None:
            continue
        if mig['switchover_at'] is None:
            # Claimed: the destination for the guest, the source held by the
            # migration (or not yet claimed at all: the guest on its source).
            expected[(mig['id'], mig['source'])] = db.requested(inst, states.BLOCK)
            expected[(inst['uuid'], mig['destination'])] = db.requested(
                inst, mig['subtype'])
        else:
            expected[(mig['id'], mig['source'])] = db.requested(inst, states.BLOCK)
    # Disk is compared nowhere: a guest on shared storage uses no host disk, which
    # only the storage probe of a migration reveals.
    held = {(a['consumer'], a['host']): {r: a[r] for r in COMPARED}
            for a in db.allocations()}
    expected = {k: {r: v[r] for r in COMPARED} for k, v in expected.items()}
    for key, amounts in held.items():
        consumer, host = key
        mig = next((m for m in active if m['id'] == consumer), None)
        if key not in expected:
            what = 'migration %s' % consumer if mig or consumer not in instances \
                else 'guest %s' % consumer
            violations.append(('allocation', 'leaked claim: %s holds %s on %s' % (
                what, _fmt(amounts), host)))
        elif amounts != expected[key] and not _in_flight_claim(key, in_flight, active):
            violations.append(('allocation', '%s holds %s on %s, expected %s' % (
                consumer, _fmt(amounts), host, _fmt(expected[key]))))
    for key in expected:
        consumer, host = key
        if key not in held and not _in_flight_claim(key, in_flight, active):
            violations.append(('allocation', 'guest %s has no allocation on its '
                               'host %s' % (consumer, host)))

    # Owners.
    for mig in active:
        if mig['id'] not in owned:
            violations.append(('owner', 'migration %s is %s with no conductor '
                               'running it' % (mig['id'], mig['status'])))

    # Leftovers.
    for host, inv in inventories.items():
        here = {u for u, s in inv['guests'].items() if s in PRESENT}
        # A shared instance directory belongs to whichever host runs the guest.
        shared_here = {u for h, other in inventories.items()
                       if paths.get(h) == paths.get(host)
                       for u, s in other['guests'].items() if s in PRESENT}
        busy = {u for u, m in in_flight.items() if host in (m['source'],
                                                            m['destination'])}
        for uuid in inv['instance_dirs']:
            if uuid not in shared_here and uuid not in busy:
                violations.append(('leftover', 'instance directory of %s on %s, '
                                   'which does not run it' % (uuid, host)))
        for vol, owner in inv['volume_connections'].items():
            if owner not in here and owner not in busy:
                violations.append(('leftover', 'volume %s connected on %s for %s, '
                                   'which does not run there' % (vol, host, owner)))
        for uuid in inv['ports']:
            if uuid not in here and uuid not in busy:
                violations.append(('leftover', 'port of %s on %s, which does not '
                                   'run it' % (uuid, host)))
        for uuid, state in inv['guests'].items():
            if state == 'incoming' and uuid not in busy:
                violations.append(('leftover', 'incoming guest %s on %s with no '
                                   'migration in flight' % (uuid, host)))
    return violations


def _subtype_for(inst, in_flight):
    # A guest's own allocation counts local disk only where its disks are local.
    return states.BLOCK if inst['storage'] == 'local' else states.BLOCK_STORAGE


def _in_flight_claim(key, in_flight, active):
    consumer, _host = key
    return consumer in in_flight or any(m['id'] == consumer for m in active)


def _fmt(amounts):
    return '%(vcpus)s vCPU, %(memory_mb)s MiB' % amounts
