"""Compute agent options."""

from oslo_config import cfg

from compute_agent import pci

compute_group = cfg.OptGroup('compute', title='Compute agent')

compute_opts = [
    cfg.StrOpt('virt_driver', default='fake',
               help='Hypervisor driver, by its entry point name in '
                    'ferryman.virt_drivers (fake, libvirt).'),
    cfg.FloatOpt('report_interval', default=10.0, min=0.1,
                 help='Seconds between reports of this host\'s resources and '
                      'guests to the conductor.'),
    cfg.BoolOpt('allow_post_copy', default=True,
                help='Let migrations to or from this host finish in post-copy '
                     '(the guest runs on the destination while its memory '
                     'follows; a network failure then loses it).'),
    cfg.BoolOpt('allow_auto_converge', default=True,
                help='Let migrations from this host throttle the guest\'s CPUs '
                     'to converge.'),
    cfg.FloatOpt('cpu_allocation_ratio', default=1.0, min=0.0001,
                 help='How far guests\' vCPUs may exceed this host\'s CPUs '
                      '(after the reserved ones); also per NUMA cell.'),
    cfg.FloatOpt('ram_allocation_ratio', default=1.0, min=0.0001,
                 help='How far guests\' memory may exceed this host\'s (after '
                      'the reserved memory); also per NUMA cell.'),
    cfg.FloatOpt('disk_allocation_ratio', default=1.0, min=0.0001,
                 help='How far guests\' local disks may exceed this host\'s '
                      'disk (after the reserved disk).'),
    cfg.IntOpt('reserved_host_cpus', default=0, min=0,
               help='CPUs kept for the host itself, never allocated to guests.'),
    cfg.IntOpt('reserved_host_memory_mb', default=0, min=0,
               help='Memory in MiB kept for the host itself.'),
    cfg.IntOpt('reserved_host_disk_gb', default=0, min=0,
               help='Local disk in GiB kept for the host itself.'),
    cfg.StrOpt('fault_injection_file',
               help='For tests only: a JSON file naming agent steps to fail '
                    '(step -> {"times": N, "skip": K}), read at every step.'),
]

fake_group = cfg.OptGroup('fake', title='Simulated hypervisor')

fake_opts = [
    cfg.StrOpt('state_dir', default='$state_path/fake',
               help='Directory holding the simulated hypervisors\' state. Every '
                    'host of one simulated cloud must point at the same '
                    'directory: it stands for the hypervisors\' own data plane.'),
    cfg.IntOpt('vcpus', default=32, min=1, help='CPUs of this simulated host.'),
    cfg.IntOpt('memory_mb', default=131072, min=1,
               help='Memory of this simulated host in MiB.'),
    cfg.IntOpt('disk_gb', default=2000, min=1,
               help='Local disk of this simulated host in GiB.'),
    cfg.StrOpt('cpu_model', default='Skylake-Server',
               help='CPU model this simulated host offers its guests.'),
    cfg.ListOpt('cpu_features', default=['sse4.2', 'avx', 'avx2', 'avx512f'],
                help='CPU features this simulated host offers.'),
    cfg.StrOpt('hypervisor_type', default='QEMU',
               help='Hypervisor type this simulated host reports.'),
    cfg.StrOpt('instances_path',
               help='Instance directory of this host; hosts given the same path '
                    'share it (file-level migration). Default: a directory of '
                    'its own under state_dir.'),
    cfg.FloatOpt('bandwidth_mibps', default=1192.0, min=1.0,
                 help='Migration link bandwidth in MiB/s (10 Gbit/s by default).'),
    cfg.FloatOpt('max_downtime_ms', default=500.0, min=1.0,
                 help='Pause allowed at switch-over of a pre-copy migration.'),
    cfg.IntOpt('numa_cells', default=0, min=0, max=64,
               help='NUMA cells this simulated host reports, its vcpus and '
                    'memory_mb split evenly between them; 0 reports none.'),
    cfg.ListOpt('pci_devices', default=[],
                help='PCI devices this simulated host reports, each as ADDRESS '
                     'or ADDRESS/TRAIT[+TRAIT...], e.g. '
                     '0000:81:00.1/CUSTOM_PHYSNET_DATA.'),
    cfg.FloatOpt('time_scale', default=0.001, min=0.0,
                 help='Real seconds spent per simulated second of copying; 0 '
                      'copies instantly.'),
]


libvirt_group = cfg.OptGroup('libvirt', title='libvirt driver')

libvirt_opts = [
    cfg.StrOpt('connection_uri', default='qemu:///system',
               help='libvirt URI of this host\'s hypervisor.'),
    cfg.StrOpt('live_migration_uri', default='qemu+tcp://%s/system',
               help='libvirt URI of a destination; %s is replaced by its host '
                    'name (validated, never free text).'),
    cfg.StrOpt('live_migration_inbound_uri', default='tcp://%s',
               help='Where QEMU sends the migration stream; %s is replaced by '
                    'the destination host name. Set e.g. tcp://127.0.0.1 when '
                    'host names do not resolve to the migration network.'),
    cfg.IntOpt('live_migration_bandwidth', default=0, min=0,
               help='Cap on the migration stream in MiB/s; 0 is unlimited.'),
    cfg.BoolOpt('live_migration_with_tls', default=False,
                help='Encrypt the migration stream with libvirt\'s native TLS.'),
    cfg.StrOpt('instances_path', default='/var/lib/ferryman/instances',
               help='Directory holding one directory per instance (its local '
                    'disks and console log); shared or not between hosts.'),
    cfg.StrOpt('volume_dir', default='/var/lib/ferryman/volumes',
               help='File-backed volumes: the directory every host sees them '
                    'in, one <volume id>.img each.'),
    cfg.StrOpt('connections_dir', default='/var/lib/ferryman/connections',
               help='Where this host records its volume connections; private '
                    'to the host. A guest\'s volume disks point here, so a '
                    'host without the connection cannot run the guest.'),
    cfg.FloatOpt('migration_job_wait', default=60.0, min=1.0,
                 help='Seconds to wait for an aborted job to end.'),
    cfg.FloatOpt('job_stats_timeout', default=2.0, min=0.1,
                 help='Longest wait for libvirt\'s figures of a running job. '
                      'libvirt answers them only between monitor commands; a '
                      'busy or dying QEMU holds them, and the agent then answers '
                      'with its last figures (marked stale) rather than hold the '
                      'conductor\'s call.'),
    cfg.StrOpt('tcg_memory_copy', default='auto', choices=[
        ('auto', 'paused where the QEMU is older than 9.0'),
        ('paused', 'always paused'),
        ('live', 'live, for a QEMU known to carry the fix')],
        help='How the memory of a TCG guest (domain type qemu, no KVM) is '
             'copied. QEMU before 9.0 loses writes a TCG guest makes while its '
             'memory is copied live (its dirty-page sync leaves stale TCG TLB '
             'entries that skip dirty logging; fixed upstream by "physmem: Fix '
             'migration dirty bitmap coherency with TCG memory access"): the '
             'guest arrives with corrupted memory. A paused copy stops the '
             'guest for the whole copy instead. KVM guests are not affected.'),
    cfg.BoolOpt('trust_shared_storage', default=False,
                help='Live-migrate guests whose instance directory (file-level) '
                     'or volumes (block-storage) Ferryman\'s probe proved shared, '
                     'even where libvirt does not recognise the file system as '
                     'shared (it knows NFS, GFS2, Ceph and a few others, and '
                     'otherwise refuses writable disks as unsafe). Set it only '
                     'for shared storage that keeps hosts coherent with '
                     'cache=none disks.'),
]


def list_opts():
    return [(compute_group, compute_opts), (fake_group, fake_opts),
            (libvirt_group, libvirt_opts)] + pci.list_opts()
