"""A TCG guest on a QEMU older than 9.0 is never copied live (issue #12): the live
copy loses writes the guest makes meanwhile, so its memory arrives corrupted."""

import threading
import types

import pytest

from compute_agent.virt.libvirt import driver

UUID = '0b5e6a5a-6b0a-4c51-8d2c-3f1b2a9e0c11'
QEMU_7_2_22 = 7002022


class FakeDomain(object):
    def __init__(self, domain_type):
        self.domain_type = domain_type
        self.migrated = threading.Event()
        self.calls = []

    def XMLDesc(self, flags=0):
        return "<domain type='%s'><name>g</name></domain>" % self.domain_type

    def UUIDString(self):
        return UUID

    def migrateToURI3(self, uri, params, flags):
        self.calls.append(('migrateToURI3', uri, params, flags))
        self.migrated.set()

    def migrateSetMaxDowntime(self, ms, flags):
        self.calls.append(('migrateSetMaxDowntime', ms))

    def jobStats(self, flags=0):
        return {}


class FakeConn(object):
    def __init__(self, version, dom):
        self.version, self.dom = version, dom

    def isAlive(self):
        return True

    def getVersion(self):
        return self.version

    def lookupByUUIDString(self, uuid):
        return self.dom


def make_driver(domain_type, version, mode='auto'):
    conf = types.SimpleNamespace(
        libvirt=types.SimpleNamespace(
            tcg_memory_copy=mode, live_migration_inbound_uri='tcp://%s',
            live_migration_uri='qemu+tcp://%s/system', live_migration_bandwidth=0,
            live_migration_with_tls=False, trust_shared_storage=True,
            job_stats_timeout=1.0, connection_uri='qemu:///system',
            instances_path='/var/lib/ferryman/instances',
            volume_dir='/var/lib/ferryman/volumes',
            connections_dir='/var/lib/ferryman/connections'),
        pci=types.SimpleNamespace(device_spec=[]))
    d = driver.LibvirtDriver(conf, 'host1')
    dom = FakeDomain(domain_type)
    d._conn = FakeConn(version, dom)
    return d, dom


@pytest.mark.parametrize('domain_type,version,mode,paused', [
    ('qemu', QEMU_7_2_22, 'auto', True),
    ('qemu', 8002002, 'auto', True),
    ('qemu', 9000000, 'auto', False),
    ('kvm', QEMU_7_2_22, 'auto', False),
    ('qemu', 9002000, 'paused', True),
    ('kvm', 9002000, 'paused', False),
    ('qemu', QEMU_7_2_22, 'live', False),
])
def test_which_guests_are_copied_paused(domain_type, version, mode, paused):
    d, dom = make_driver(domain_type, version, mode)
    reason = d._paused_copy_reason(dom)
    assert bool(reason) == paused
    if paused and mode == 'auto':
        assert '%d.%d.%d' % (version // 1000000, version // 1000 % 1000,
                             version % 1000) in reason


def _start(d, dom, params):
    job = d.start_migration({'uuid': UUID}, 'host2', 'file-level', params)
    assert dom.migrated.wait(5)
    d._jobs[UUID].thread.join(5)
    flags = [c for c in dom.calls if c[0] == 'migrateToURI3'][0][3]
    return job, flags


def test_a_tcg_guest_on_qemu_7_2_is_migrated_paused_without_post_copy():
    lv = driver.libvirt
    d, dom = make_driver('qemu', QEMU_7_2_22)
    job, flags = _start(d, dom, {'post_copy': True, 'auto_converge': True,
                                 'max_downtime_ms': 125})
    assert not flags & lv.VIR_MIGRATE_LIVE
    assert not flags & lv.VIR_MIGRATE_POSTCOPY
    assert not flags & lv.VIR_MIGRATE_AUTO_CONVERGE
    assert flags & lv.VIR_MIGRATE_PEER2PEER
    assert job['paused'] and '7.2.22' in job['paused_copy']
    # No downtime to steer: the whole copy is downtime.
    assert not [c for c in dom.calls if c[0] == 'migrateSetMaxDowntime']


def test_a_kvm_guest_is_migrated_live_as_asked():
    lv = driver.libvirt
    d, dom = make_driver('kvm', QEMU_7_2_22)
    job, flags = _start(d, dom, {'post_copy': True, 'max_downtime_ms': 125})
    assert flags & lv.VIR_MIGRATE_LIVE
    assert flags & lv.VIR_MIGRATE_POSTCOPY
    assert not job['paused'] and job['paused_copy'] is None
    assert ('migrateSetMaxDowntime', 125) in dom.calls


class PausedForCopy(FakeDomain):
    """The source's domain while libvirt copies it paused: persistent, paused for
    a migration, its job an outgoing one."""

    def __init__(self, persistent=True):
        super().__init__('qemu')
        self.persistent = persistent

    def state(self):
        return [driver.libvirt.VIR_DOMAIN_PAUSED, driver.libvirt.VIR_DOMAIN_PAUSED_MIGRATION]

    def isPersistent(self):
        return self.persistent

    def jobInfo(self):
        return [driver.libvirt.VIR_DOMAIN_JOB_UNBOUNDED] + [0] * 11

    def jobStats(self, flags=0):
        return {'operation': driver.libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT}


def test_a_restarted_agent_adopts_a_paused_copy_and_answers():
    # An agent restarted while its guest is copied paused found the guest paused
    # for a migration and took it for an incoming one, under a lock it then took
    # again: it never answered the conductor, and the migration hung.
    d, _ = make_driver('qemu', QEMU_7_2_22)
    d._conn.dom = PausedForCopy()
    answer = []
    t = threading.Thread(target=lambda: answer.append(d.get_migration_job(UUID)),
                         daemon=True)
    t.start()
    t.join(5)
    assert answer, 'get_migration_job did not answer'
    assert answer[0]['status'] == 'running'
    assert not d._incoming(d._conn.dom)
    d._conn.dom = None  # the guest left: the adopted job's watcher ends


def test_an_incoming_guest_is_still_told_apart():
    d, _ = make_driver('qemu', QEMU_7_2_22)
    # Transient until libvirt's finish phase defines it on the destination.
    assert d._incoming(PausedForCopy(persistent=False))
