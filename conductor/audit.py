"""ferryman audit: the invariants Ferryman promises, checked against the hosts.

- every guest runs on exactly one host, the one the database names;
- resources held match: each guest's allocation on its host only, plus the claims
  of migrations in flight, nothing for anything else;
- the same for nested allocations (NUMA cells, PCI devices): a guest holds what
  its flavor asks for on its own host, migrations in flight their claims, nobody
  anything elsewhere, each on a provider of the host it names, and no provider
  more than its inventory allows;
- no migration in a non-terminal state without a live owner;
- nothing left behind (instance directories, volume connections, ports) on a host
  that does not run the guest;
- fencing: no evacuated guest is defined on its old host once that host
  reports again, and the evacuation's source allocation is held until then;
- every record can be interpreted: a host or guest row holding a value that
  cannot (written by hand, or before reports were checked) is a violation, and
  is left out of the other checks rather than break them.

Hosts involved in a migration in flight are allowed the in-between states it
implies (an incoming guest, a prepared destination); nothing else is excused.
"""

import collections

from oslo_log import log as logging

from conductor import placement
from ferryman.common import schemas
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
    instances, unreadable = {}, set()
    for inst in db.instances.list():
        problems = schemas.problems('instance', inst)
        if problems:
            unreadable.add(inst['uuid'])
            violations.append(('record', 'guest %s (%s): its record cannot be '
                               'interpreted: %s' % (schemas.shown(inst['name']),
                                                    inst['uuid'],
                                                    '; '.join(problems))))
        else:
            instances[inst['uuid']] = inst
    for host in hosts:
        if host.get('problems'):
            violations.append(('record', 'host %s: its record cannot be '
                               'interpreted: %s' % (host['name'],
                                                    '; '.join(host['problems']))))
    active = [m for m in db.migrations.list() if m['status'] in states.ACTIVE]
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
        expected[(uuid, inst['host'])] = placement.requested(
            inst, _subtype_for(inst, in_flight))
    for mig in active:
        inst = instances.get(mig['instance_uuid'])
        if inst is None:
            continue
        if mig['switchover_at'] is None:
            # Claimed: the destination for the guest, the source held by the
            # migration (or not yet claimed at all: the guest on its source).
            expected[(mig['id'], mig['source'])] = placement.requested(
                inst, states.BLOCK)
            expected[(inst['uuid'], mig['destination'])] = placement.requested(
                inst, mig['subtype'])
        else:
            expected[(mig['id'], mig['source'])] = placement.requested(
                inst, states.BLOCK)
    # An evacuation holds its source allocation until that host fences the guest.
    unfenced = [m for m in db.migrations.list()
                if m['subtype'] == states.EVACUATION and m['fenced_at'] is None
                and m['switchover_at'] is not None
                and m['status'] in states.TERMINAL]
    for mig in unfenced:
        inst = instances.get(mig['instance_uuid'])
        if inst is not None:
            expected[(mig['id'], mig['source'])] = placement.requested(
                inst, states.BLOCK)
    violations.extend(_fencing(db, instances, hosts, inventories))
    # Disk is compared nowhere: a guest on shared storage uses no host disk, which
    # only the storage probe of a migration reveals.
    held = {(a['consumer'], a['host']): {r: a[r] for r in COMPARED}
            for a in db.allocations.list() if a['consumer'] not in unreadable}
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

    violations.extend(_nested([n for n in db.allocations.nested()
                               if n['consumer'] not in unreadable],
                              instances, active, hosts, unfenced))

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


def _fencing(db, instances, hosts, inventories):
    """Evacuated guests still defined on their old host, once it reports."""
    out = []
    # ISO 8601 texts of one format compare as times do.
    seen = {h['name']: h['last_seen'] for h in hosts}
    for mig in db.migrations.list(status=states.COMPLETED):
        if mig['subtype'] != states.EVACUATION or \
                seen.get(mig['source'], '') <= mig['created_at']:
            continue  # not back yet
        inv = inventories.get(mig['source'])
        name = instances.get(mig['instance_uuid'], {}).get('name', '?')
        if inv is not None and inv['guests'].get(mig['instance_uuid']) in PRESENT:
            out.append(('fencing', 'guest %s (%s) was evacuated to %s (migration '
                        '%s) and is still defined on its old host %s' % (
                            name, mig['instance_uuid'], mig['destination'],
                            mig['id'], mig['source'])))
        elif mig['fenced_at'] is None:
            out.append(('fencing', 'host %s reports again but has not fenced '
                        'guest %s (%s) of evacuation %s' % (
                            mig['source'], name, mig['instance_uuid'], mig['id'])))
    return out


def _nested(rows, instances, active, hosts, unfenced=()):
    """Violations of nested allocations ``rows`` (NUMA cells, PCI devices);
    ``unfenced``: ended evacuations still holding their source's."""
    out = []
    # A host whose record cannot be interpreted has no capacity to check against
    # (its own violation says why).
    providers = {p['name']: (h, p) for h in hosts if not h.get('problems')
                 for p in h.get('providers') or []}
    unknown = {p['name'] for h in hosts if h.get('problems')
               for p in h.get('providers') or []}
    migrations = {m['id']: m for m in active}
    # Who may hold what where: a guest on its host; a migration in flight on
    # its source (the guest's source side), its guest on its destination.
    allowed = {(u, i['host']) for u, i in instances.items()}
    for mig in active:
        allowed |= {(mig['id'], mig['source']),
                    (mig['instance_uuid'], mig['destination'])}
    allowed |= {(mig['id'], mig['source']) for mig in unfenced}
    used = collections.defaultdict(collections.Counter)
    held = collections.defaultdict(collections.Counter)  # (consumer, host)
    for row in rows:
        consumer, host, name = row['consumer'], row['host'], row['provider']
        resources = row['resources']
        if name in unknown or schemas.problems('resources', resources):
            continue  # its host's record violation names it
        used[name].update(resources)
        where = providers.get(name)
        if where is None or where[0]['name'] != host:
            out.append(('allocation', '%s holds %s on %s, which is no provider '
                        'of host %s' % (consumer, _fmt_nested(resources), name,
                                        host)))
        if (consumer, host) not in allowed:
            what = 'migration %s' % consumer if consumer in migrations or \
                consumer not in instances else 'guest %s' % consumer
            out.append(('allocation', 'leaked nested claim: %s holds %s on %s '
                        '(host %s)' % (what, _fmt_nested(resources), name, host)))
            continue
        if where is None:
            continue
        if where[1]['kind'] == placement.NUMA:
            held[(consumer, host)]['cells'] += 1
        else:
            held[(consumer, host)]['devices'] += resources.get(
                placement.PCI_DEVICE, 0)
    # Every guest settled on its host holds what its flavor asks for there.
    moving = {m['instance_uuid'] for m in active}
    bad_hosts = {h['name'] for h in hosts if h.get('problems')}
    for uuid, inst in instances.items():
        if uuid in moving or inst['host'] in bad_hosts:
            continue
        cells = len(inst.get('numa_topology') or [])
        devices = sum(int(r['count']) for r in inst.get('pci_requests') or [])
        has = held.get((uuid, inst['host']), {})
        if (has.get('cells', 0), has.get('devices', 0)) != (cells, devices):
            out.append(('allocation', 'guest %s (%s) holds %d NUMA cell(s) and %d '
                        'PCI device(s) on its host %s; its flavor asks for %d '
                        'and %d' % (inst['name'], uuid, has.get('cells', 0),
                                    has.get('devices', 0), inst['host'], cells,
                                    devices)))
    # No provider beyond what it can hold.
    for name, amounts in sorted(used.items()):
        if name not in providers:
            continue
        host, provider = providers[name]
        for klass, amount in sorted(amounts.items()):
            cap = placement.provider_capacity(host, provider, klass)
            if amount > cap:
                out.append(('overcommit', 'provider %s holds %s %s, it can hold '
                            '%s' % (name, amount, klass, cap)))
    return out


def _fmt_nested(resources):
    return ', '.join('%s %s' % kv for kv in sorted(resources.items()))


def _subtype_for(inst, in_flight):
    # A guest's own allocation counts local disk only where its disks are local.
    return states.BLOCK if inst['storage'] == 'local' else states.BLOCK_STORAGE


def _in_flight_claim(key, in_flight, active):
    consumer, _host = key
    return consumer in in_flight or any(m['id'] == consumer for m in active)


def _fmt(amounts):
    return '%(vcpus)s vCPU, %(memory_mb)s MiB' % amounts
