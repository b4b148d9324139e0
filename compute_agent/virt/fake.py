"""A simulated hypervisor, deterministic and fast, for tests, the demo and scale runs.

All simulated hosts of one cloud share a state directory: one JSON file per host (its
guests, volume connections, ports and injected faults) and real instance directories
and disk files. The directory plays the hypervisors' own data plane: a source job hands
the guest to the destination there, as libvirt does peer to peer, while the agents
never call each other.

Memory copying follows pre-copy: each iteration sends what is dirty at the link's
bandwidth while the guest dirties more; it switches over once the rest fits in the
allowed downtime. Time is simulated and only scaled into real sleeps.
"""

import contextlib
import fcntl
import json
import os
import shutil
import threading
import uuid as uuidlib

from oslo_log import log as logging

from compute_agent import faults
from compute_agent.virt import driver
from compute_agent.virt import simulation
from ferryman.common import exception
from ferryman.common import vocabulary as vocab

LOG = logging.getLogger(__name__)


class FakeCloud(object):
    """The shared state of every simulated host; also the tests' handle on it."""

    def __init__(self, state_dir):
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(os.path.join(self.state_dir, 'hosts'), exist_ok=True)
        os.makedirs(os.path.join(self.state_dir, 'volumes'), exist_ok=True)
        os.makedirs(os.path.join(self.state_dir, 'images'), exist_ok=True)
        self._thread_lock = threading.RLock()

    @contextlib.contextmanager
    def locked(self):
        # flock serialises processes; the RLock serialises threads of one process
        # (flock is per open file, so one thread could not re-enter it safely).
        with self._thread_lock:
            with open(os.path.join(self.state_dir, '.lock'), 'a') as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _path(self, host):
        return os.path.join(self.state_dir, 'hosts', host + '.json')

    def hosts(self):
        return sorted(n[:-5] for n in os.listdir(os.path.join(self.state_dir, 'hosts'))
                      if n.endswith('.json'))

    def load(self, host):
        try:
            with open(self._path(host)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise exception.HostNotFound(host=host)

    def _save(self, host, state):
        tmp = self._path(host) + '.tmp'
        with open(tmp, 'w') as f:
            # dumps, not dump: only a one-shot encode uses json's C encoder, and
            # every step of every simulated migration rewrites its host's file.
            f.write(json.dumps(state, sort_keys=True))
        os.replace(tmp, self._path(host))

    @contextlib.contextmanager
    def editing(self, host):
        with self.locked():
            state = self.load(host)
            yield state
            self._save(host, state)

    def ensure_host(self, host, info):
        with self.locked():
            try:
                state = self.load(host)
            except exception.HostNotFound:
                state = {'guests': {}, 'volume_connections': {}, 'ports': {},
                         'faults': {}}
            state['info'] = info
            self._save(host, state)

    def volume_path(self, volume_id):
        return os.path.join(self.state_dir, 'volumes', volume_id)

    def image_path(self, image):
        return os.path.join(self.state_dir, 'images', image)

    def create_image(self, image, data=''):
        """A base image every simulated host can rebuild disks from."""
        with open(self.image_path(image), 'w') as f:
            json.dump({'id': image, 'data': data}, f)

    def crash_host(self, host):
        """The host dies: its guests' QEMU processes die with it, their
        domains stay defined (shut off), as libvirt finds them on reboot."""
        with self.editing(host) as state:
            for guest in state['guests'].values():
                if guest['power_state'] != 'incoming':
                    guest['power_state'] = 'shutoff'

    def read_volume(self, volume_id):
        with open(self.volume_path(volume_id)) as f:
            return json.load(f)['data']

    # Seeding and inspection, for the demo and the tests. ----------------------
    def create_guest(self, host, name, memory_mb=1024, vcpus=1, storage='local',
                     disks=None, volumes=None, dirty_rate_mibps=0.0,
                     sla_class='pet', uuid=None, data='', numa_topology=None,
                     pci_requests=None, project_id=None, user_id=None,
                     image=None):
        """Boot a guest on a host, with its disks or volumes holding ``data``;
        its flavor may ask for NUMA cells ([{vcpus, memory_mb}]) and PCI devices
        ([{count, trait}]); its owner is a project and user id."""
        if storage not in ('local', 'volume'):
            raise exception.InvalidArgument(name='storage', value=storage,
                                            reason='expected local or volume')
        uuid = uuid or str(uuidlib.uuid4())
        if storage == 'local':
            disks = disks if disks is not None else [
                {'name': 'root', 'size_gb': 10, 'format': 'qcow2'}]
            volumes = []
        else:
            disks = []
            volumes = volumes or ['vol-%s-root' % uuid[:8]]
        guest = {'uuid': uuid, 'name': name, 'vcpus': vcpus,
                 'memory_mb': memory_mb, 'storage': storage, 'disks': disks,
                 'volumes': volumes, 'dirty_rate_mibps': dirty_rate_mibps,
                 'sla_class': sla_class, 'power_state': 'running'}
        if numa_topology:
            guest['numa_topology'] = numa_topology
        if pci_requests:
            guest['pci_requests'] = pci_requests
        for field, value in (('project_id', project_id), ('user_id', user_id)):
            if value:
                guest[field] = value
        if image:
            guest['image'] = image  # its metadata's base image reference
        with self.editing(host) as state:
            instance_dir = os.path.join(state['info']['instances_path'], uuid)
            os.makedirs(instance_dir, exist_ok=True)
            for disk in disks:
                _write_disk(os.path.join(instance_dir, 'disk.' + disk['name']),
                            disk, data)
            for vol in volumes:
                with open(self.volume_path(vol), 'w') as f:
                    json.dump({'id': vol, 'data': data}, f)
                state['volume_connections'][vol] = uuid
            state['ports'][uuid] = 'active'
            state['guests'][uuid] = guest
        return guest

    def guests(self, host, include_incoming=False):
        guests = self.load(host)['guests'].values()
        return [g for g in guests
                if include_incoming or g['power_state'] != 'incoming']

    def find_guest(self, uuid):
        """Hosts on which the guest exists, with its state there."""
        return {h: self.load(h)['guests'][uuid]['power_state']
                for h in self.hosts() if uuid in self.load(h)['guests']}

    def read_disk(self, host, uuid, disk='root'):
        path = os.path.join(self.load(host)['info']['instances_path'], uuid,
                            'disk.' + disk)
        with open(path) as f:
            return json.load(f)['data']

    def leftovers(self, host, uuid):
        """What the guest has on a host: instance dir (unless shared with the host
        running it), volume connections, ports, the guest itself."""
        state = self.load(host)
        found = []
        path = state['info']['instances_path']
        # A shared directory belongs to whichever host runs the guest from it.
        owned_elsewhere = any(
            self.load(h)['info']['instances_path'] == path and
            self.load(h)['guests'].get(uuid, {}).get('power_state') == 'running'
            for h in self.hosts() if h != host)
        if os.path.isdir(os.path.join(path, uuid)) and not owned_elsewhere:
            found.append('instance-dir')
        found += ['volume:' + v for v, owner in state['volume_connections'].items()
                  if owner == uuid]
        if uuid in state['ports']:
            found.append('port')
        if uuid in state['guests']:
            found.append('guest:' + state['guests'][uuid]['power_state'])
        return found

    def destroy_guest(self, uuid):
        """Delete a guest outside Ferryman, from every host: what an operator's
        ``virsh undefine`` and ``rm -r`` would do."""
        for host in self.hosts():
            with self.editing(host) as state:
                state['guests'].pop(uuid, None)
                state['ports'].pop(uuid, None)
                for vol, owner in list(state['volume_connections'].items()):
                    if owner == uuid:
                        del state['volume_connections'][vol]
                shutil.rmtree(os.path.join(state['info']['instances_path'], uuid),
                              ignore_errors=True)

    def inject_fault(self, host, step, times=-1, skip=0, delay_s=None):
        """Make the named driver step fail on a host ``times`` times (-1: always),
        after ``skip`` calls that succeed; with ``delay_s``, hold those calls that
        long instead, then let them pass."""
        fault = {'times': times, 'skip': skip}
        if delay_s:
            fault['delay_s'] = float(delay_s)
        with self.editing(host) as state:
            state['faults'][step] = fault

    def clear_faults(self, host):
        with self.editing(host) as state:
            state['faults'] = {}


def _write_disk(path, disk, data=''):
    with open(path, 'w') as f:
        json.dump({'format': disk['format'], 'virtual_size_gb': disk['size_gb'],
                   'data': data}, f)


def _disk_gb(guest):
    return sum(d['size_gb'] for d in guest['disks'])


class _Job(object):
    def __init__(self, guest, destination, subtype, params, model):
        self.guest = guest
        self.destination = destination
        self.subtype = subtype
        self.params = params
        self.model = model
        self.lock = threading.Lock()   # the model is steered while it runs
        self.abort = threading.Event()
        self.switched = False          # the guest runs on the destination
        self.handed_over = False       # ... and the source has let go of it
        self.thread = None

    def stats(self):
        with self.lock:
            stats = self.model.stats()
        if stats['status'] == vocab.JOB_COMPLETED and not self.handed_over:
            stats['status'] = vocab.JOB_RUNNING  # copied, but not yet switched over
        return stats


class _Evacuation(object):
    """The simulated hypervisor's side of an evacuation (FakeDriver's)."""

    def check_rebuild(self, guest, source_info):
        self._fault('check_rebuild')
        self._check_fits(guest, source_info)
        disks = guest.get('disks') or []
        path = self._instance_dir(guest['uuid'])
        return {'shared_instance_path': bool(disks) and all(
            os.path.exists(os.path.join(path, 'disk.' + d['name'])) for d in disks)}

    def rebuild_disks(self, guest):
        self._fault('rebuild_disks')
        image = guest.get('image')
        try:
            with open(self.cloud.image_path(image or '-')) as f:
                data = json.load(f)['data']
        except FileNotFoundError:
            raise exception.AgentStepFailed(
                step='rebuild_disks', host=self.host,
                reason='image %r of guest %s not found' % (image, guest['uuid']))
        instance_dir = self._instance_dir(guest['uuid'])
        os.makedirs(instance_dir, exist_ok=True)
        for disk in guest['disks']:
            _write_disk(os.path.join(instance_dir, 'disk.' + disk['name']), disk,
                        data)

    def _missing(self, guest, state):
        # What libvirt would trip over defining it: files, volumes, ports.
        path = self._instance_dir(guest['uuid'])
        for disk in guest.get('disks') or []:
            if not os.path.exists(os.path.join(path, 'disk.' + disk['name'])):
                return 'disk %s is missing' % disk['name']
        for vol in guest.get('volumes') or []:
            if state['volume_connections'].get(vol) != guest['uuid']:
                return 'volume %s is not connected here' % vol
        if guest['uuid'] not in state['ports']:
            return 'networking is not prepared here'
        return None

    def define_guest(self, guest):
        self._fault('define_guest')
        with self.cloud.editing(self.host) as state:
            if guest['uuid'] in state['guests']:
                return  # defined already (a repeated call)
            problem = self._missing(guest, state)
            if problem:
                raise exception.AgentStepFailed(step='define_guest',
                                                host=self.host, reason=problem)
            record = {k: v for k, v in guest.items() if k != 'disk_gb'}
            record.setdefault('dirty_rate_mibps', 0.0)
            state['guests'][guest['uuid']] = dict(record, power_state='shutoff')

    def undefine_guest(self, uuid):
        self._fault('undefine_guest')
        with self.cloud.editing(self.host) as state:
            state['guests'].pop(uuid, None)

    def start_guest(self, guest):
        self._fault('start_guest')
        with self.cloud.editing(self.host) as state:
            current = state['guests'].get(guest['uuid'])
            if current is None:
                raise exception.AgentStepFailed(
                    step='start_guest', host=self.host,
                    reason='guest %s is not defined here' % guest['uuid'])
            current['power_state'] = 'running'
            current['boots'] = current.get('boots', 0) + 1
            state['ports'][guest['uuid']] = 'active'
        return self._public(current)

    def stop_guest(self, uuid):
        self._fault('stop_guest')
        with self.cloud.editing(self.host) as state:
            current = state['guests'].get(uuid)
            if current is not None and current['power_state'] != 'incoming':
                current['power_state'] = 'shutoff'

    def fence_guest(self, evacuated):
        self._fault('fence_guest')
        uuid = evacuated['uuid']
        with self.cloud.editing(self.host) as state:
            state['guests'].pop(uuid, None)
            state['ports'].pop(uuid, None)
            state.get('jobs', {}).pop(uuid, None)
            for vol, owner in list(state['volume_connections'].items()):
                if owner == uuid:
                    del state['volume_connections'][vol]
        # Shared files stay; a directory of its own here held stale rebuilt-
        # elsewhere disks, or only the domain's files (the data is the volume's).
        if evacuated['storage'] != vocab.EVACUATE_SHARED and \
                not self._shared_with_a_host_of(uuid):
            shutil.rmtree(self._instance_dir(uuid), ignore_errors=True)

    def _shared_with_a_host_of(self, uuid):
        return any(self.cloud.load(h)['info']['instances_path'] ==
                   self.instances_path and uuid in self.cloud.load(h)['guests']
                   for h in self.cloud.hosts() if h != self.host)


class FakeDriver(_Evacuation, driver.ComputeDriver):

    def __init__(self, conf, host):
        super().__init__(conf, host)
        self.cloud = FakeCloud(conf.fake.state_dir)
        self.instances_path = os.path.abspath(
            conf.fake.instances_path or
            os.path.join(self.cloud.state_dir, 'instances', host))
        self._jobs = {}
        self._jobs_lock = threading.Lock()

    def init_host(self):
        os.makedirs(self.instances_path, exist_ok=True)
        f = self.conf.fake
        self.cloud.ensure_host(self.host, {
            'hypervisor_type': f.hypervisor_type, 'cpu_model': f.cpu_model,
            'cpu_features': sorted(f.cpu_features), 'vcpus': f.vcpus,
            'memory_mb': f.memory_mb, 'disk_gb': f.disk_gb,
            'instances_path': self.instances_path,
            'bandwidth_mibps': f.bandwidth_mibps})
        self._adopt_jobs()

    def cleanup_host(self):
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.abort.set()
            if job.thread:
                job.thread.join(5)

    def _fault(self, step):
        with self.cloud.editing(self.host) as state:
            fault = faults.consume(state['faults'], step)
        faults.apply(fault, step, self.host)

    def _instance_dir(self, uuid):
        return os.path.join(self.instances_path, uuid)

    def get_host_info(self):
        info = dict(self.cloud.load(self.host)['info'])
        info['features'] = {'bandwidth_mibps': info.pop('bandwidth_mibps')}
        f = self.conf.fake
        # Nested providers, as configured now: cells split the host evenly.
        info['numa_cells'] = [{'id': i, 'vcpus': info['vcpus'] // f.numa_cells,
                               'memory_mb': info['memory_mb'] // f.numa_cells}
                              for i in range(f.numa_cells)]
        info['pci_devices'] = []
        for entry in f.pci_devices:
            address, _, traits = entry.partition('/')
            info['pci_devices'].append({'address': address, 'count': 1, 'traits':
                                        [t for t in traits.split('+') if t]})
        return info

    def list_guests(self):
        return [self._public(g) for g in self.cloud.guests(self.host)]

    def get_guest(self, uuid):
        guest = self.cloud.load(self.host)['guests'].get(uuid)
        if guest is None or guest['power_state'] == 'incoming':
            raise exception.InstanceNotFound(instance=uuid)
        return self._public(guest)

    def inventory(self):
        state = self.cloud.load(self.host)
        return {'guests': {u: g['power_state'] for u, g in state['guests'].items()},
                'instance_dirs': _instance_dirs(self.instances_path),
                'volume_connections': dict(state['volume_connections']),
                'ports': sorted(state['ports'])}

    @staticmethod
    def _public(guest):
        out = dict(guest)
        out.pop('boots', None)  # the simulation's count, for tests
        out['disk_gb'] = _disk_gb(guest)
        return out

    # Checks. -----------------------------------------------------------------
    def check_destination(self, guest, source_info, probe):
        self._fault('check_destination')
        self._check_fits(guest, source_info)
        self.leave_probe(probe)
        return {'instances_path': self.instances_path}

    def _check_fits(self, guest, source_info):
        state = self.cloud.load(self.host)
        info = state['info']
        if info['hypervisor_type'] != source_info['hypervisor_type']:
            raise exception.IncompatibleHost(
                host=self.host, instance=guest['uuid'],
                reason='hypervisor %s, source has %s' % (
                    info['hypervisor_type'], source_info['hypervisor_type']))
        missing = sorted(set(source_info['cpu_features']) - set(info['cpu_features']))
        if missing:
            raise exception.IncompatibleHost(
                host=self.host, instance=guest['uuid'],
                reason='CPU lacks features %s' % ', '.join(missing))
        used = sum(g['memory_mb'] for u, g in state['guests'].items()
                   if u != guest['uuid'])
        free = info['memory_mb'] - used
        if guest['memory_mb'] > free:
            raise exception.InsufficientCapacity(
                host=self.host, instance=guest['uuid'], resource='memory_mb',
                requested=guest['memory_mb'], free=free)

    def remove_probe(self, probe):
        self._fault('remove_probe')
        super().remove_probe(probe)

    def check_source(self, uuid, probe):
        self._fault('check_source')
        self.probe_path(probe)  # refused before anything is read
        guest = self.get_guest(uuid)
        if guest['power_state'] != 'running':
            raise exception.InstanceNotRunning(instance=uuid,
                                               power_state=guest['power_state'])
        return {'shared_instance_path': self.sees_probe(probe),
                'volume_backed': guest['storage'] == 'volume',
                'local_disks': [d['name'] for d in guest['disks']],
                'cpu_features': self.get_host_info()['cpu_features']}

    # Destination preparation. ----------------------------------------------------
    def _refuse_if_running_here(self, uuid, step):
        guest = self.cloud.load(self.host)['guests'].get(uuid)
        if guest is not None and guest['power_state'] != 'incoming':
            raise exception.AgentStepFailed(
                step=step, host=self.host,
                reason='guest %s runs on this host; refusing to remove its '
                       'resources' % uuid)

    def create_local_disks(self, guest):
        self._fault('create_local_disks')
        instance_dir = self._instance_dir(guest['uuid'])
        os.makedirs(instance_dir, exist_ok=True)
        for disk in guest['disks']:
            path = os.path.join(instance_dir, 'disk.' + disk['name'])
            if not os.path.exists(path):
                _write_disk(path, disk)

    def delete_local_disks(self, guest):
        self._fault('delete_local_disks')
        self._refuse_if_running_here(guest['uuid'], 'delete_local_disks')
        shutil.rmtree(self._instance_dir(guest['uuid']), ignore_errors=True)

    def connect_volumes(self, guest):
        self._fault('connect_volumes')
        os.makedirs(self._instance_dir(guest['uuid']), exist_ok=True)
        with self.cloud.editing(self.host) as state:
            for vol in guest['volumes']:
                if not os.path.exists(self.cloud.volume_path(vol)):
                    raise exception.AgentStepFailed(
                        step='connect_volumes', host=self.host,
                        reason='volume %s does not exist' % vol)
                state['volume_connections'][vol] = guest['uuid']

    def disconnect_volumes(self, guest):
        self._fault('disconnect_volumes')
        self._refuse_if_running_here(guest['uuid'], 'disconnect_volumes')
        self._disconnect(guest)

    def _disconnect(self, guest):
        with self.cloud.editing(self.host) as state:
            for vol in guest['volumes']:
                if state['volume_connections'].get(vol) == guest['uuid']:
                    del state['volume_connections'][vol]
        shutil.rmtree(self._instance_dir(guest['uuid']), ignore_errors=True)

    def plug_networking(self, guest):
        self._fault('plug_networking')
        with self.cloud.editing(self.host) as state:
            state['ports'].setdefault(guest['uuid'], 'prepared')

    def unplug_networking(self, guest):
        self._fault('unplug_networking')
        self._refuse_if_running_here(guest['uuid'], 'unplug_networking')
        with self.cloud.editing(self.host) as state:
            state['ports'].pop(guest['uuid'], None)

    # The migration job. ----------------------------------------------------------
    def start_migration(self, guest, destination, subtype, params):
        self._fault('start_migration')
        uuid = guest['uuid']
        with self._jobs_lock:
            job = self._jobs.get(uuid)
            if job is not None and job.stats()['status'] == vocab.JOB_RUNNING:
                return job.stats()  # already started: a repeated call is a no-op
            current = self.get_guest(uuid)
            if current['power_state'] != 'running':
                raise exception.InstanceNotRunning(
                    instance=uuid, power_state=current['power_state'])
            dest_state = self.cloud.load(destination)
            problem = self._destination_not_ready(current, dest_state, subtype)
            if problem:
                raise exception.MigrationJobFailed(instance=uuid, reason=problem)
            job = _Job(current, destination, subtype, params,
                       self._model(current, dest_state, subtype, params))
            self._jobs[uuid] = job
            with self.cloud.editing(destination) as state:
                incoming = dict(current, power_state='incoming')
                state['guests'][uuid] = incoming
            # The hypervisor's job outlives this agent (see init_host).
            with self.cloud.editing(self.host) as state:
                state.setdefault('jobs', {})[uuid] = {
                    'destination': destination, 'subtype': subtype,
                    'params': params}
            self._start_job(job)
            return job.stats()

    def _start_job(self, job):
        job.thread = threading.Thread(target=self._run_job, args=(job,),
                                      name='fake-migration-%s' % job.guest['uuid'],
                                      daemon=True)
        job.thread.start()

    def _adopt_jobs(self):
        """Jobs a previous agent started go on, as libvirt's do when its agent
        dies: the simulated hypervisor carries them on under the new agent."""
        state = self.cloud.load(self.host)
        for uuid, rec in state.get('jobs', {}).items():
            guest = state['guests'].get(uuid)
            dest_state = self.cloud.load(rec['destination'])
            if guest is None or uuid not in dest_state['guests']:
                # It ended (or was torn down) while nobody watched.
                with self.cloud.editing(self.host) as st:
                    st.get('jobs', {}).pop(uuid, None)
                continue
            LOG.info('Migration job of %s to %s found running: adopted', uuid,
                     rec['destination'])
            job = _Job(guest, rec['destination'], rec['subtype'], rec['params'],
                       self._model(guest, dest_state, rec['subtype'], rec['params']))
            job.switched = dest_state['guests'][uuid]['power_state'] == 'running'
            with self._jobs_lock:
                self._jobs[uuid] = job
            self._start_job(job)

    def _destination_not_ready(self, guest, dest_state, subtype):
        # What libvirt would trip over: missing disks, volumes or ports.
        dest_dir = os.path.join(dest_state['info']['instances_path'], guest['uuid'])
        if subtype == vocab.BLOCK:
            for disk in guest['disks']:
                if not os.path.exists(os.path.join(dest_dir, 'disk.' + disk['name'])):
                    return 'destination disk %s is missing' % disk['name']
        elif subtype == vocab.FILE_LEVEL:
            if dest_state['info']['instances_path'] != self.instances_path:
                return 'instance directory is not shared with the destination'
        elif subtype == vocab.BLOCK_STORAGE:
            for vol in guest['volumes']:
                if dest_state['volume_connections'].get(vol) != guest['uuid']:
                    return 'volume %s is not connected on the destination' % vol
        if guest['uuid'] not in dest_state['ports']:
            return 'networking is not prepared on the destination'
        if guest['uuid'] in dest_state['guests']:
            return 'a domain of that uuid already exists on the destination'
        return None

    def _model(self, guest, dest_state, subtype, params):
        bandwidth = min(self.cloud.load(self.host)['info']['bandwidth_mibps'],
                        dest_state['info']['bandwidth_mibps'])
        if params.get('bandwidth_mibps'):
            bandwidth = min(bandwidth, float(params['bandwidth_mibps']))
        return simulation.MigrationModel(
            guest['memory_mb'], guest['dirty_rate_mibps'], bandwidth,
            disk_mb=_disk_gb(guest) * 1024.0 if subtype == vocab.BLOCK else 0.0,
            max_downtime_ms=float(params.get('max_downtime_ms') or
                                  self.conf.fake.max_downtime_ms),
            auto_converge=bool(params.get('auto_converge')),
            compressed=bool(params.get('compressed')),
            post_copy=bool(params.get('post_copy')))

    def _run_job(self, job):
        try:
            self._copy(job)
        except Exception as exc:  # the job ends here either way; record how
            self._forget_job(job)
            LOG.warning('Migration job of %s ended: %s', job.guest['uuid'], exc)
            with job.lock:
                if job.abort.is_set():
                    job.model.abort()
                else:
                    job.model.fail(str(exc))
            if not job.switched:
                with self.cloud.editing(job.destination) as state:
                    if state['guests'].get(job.guest['uuid'], {}).get(
                            'power_state') == 'incoming':
                        del state['guests'][job.guest['uuid']]
        else:
            self._forget_job(job)

    def _forget_job(self, job):
        with self.cloud.editing(self.host) as state:
            state.get('jobs', {}).pop(job.guest['uuid'], None)

    def _copy(self, job):
        model = job.model
        # Ticks of 1/100 of the ideal copy time: fine enough to steer between.
        tick = max(0.01, (model.memory + model.disk_total) / model.bandwidth / 100.0)
        failed_once = False
        while True:
            with job.lock:
                if model.finished:
                    break
                model.run_for(tick)
                if model.phase == 'postcopy' and not job.switched:
                    self._post_copy_switch(job)
            if model.phase == 'precopy' and not failed_once:
                failed_once = True
                self._fault('migration_job')
            # At least a millisecond per tick: a job that never converges must
            # not spin a core while it waits to be steered or aborted.
            if job.abort.wait(max(tick * self.conf.fake.time_scale, 0.001)):
                raise exception.MigrationJobFailed(instance=job.guest['uuid'],
                                                   reason='aborted')
        if model.phase == 'done':
            self._switch_over(job)

    def _post_copy_switch(self, job):
        # The guest resumes on the destination now; the source keeps a paused
        # shell until the rest of its memory has been pulled.
        uuid = job.guest['uuid']
        with self.cloud.locked():
            dest = self.cloud.load(job.destination)
            src = self.cloud.load(self.host)
            dest['guests'][uuid] = dict(src['guests'][uuid], power_state='running')
            src['guests'][uuid]['power_state'] = 'paused'
            self.cloud._save(job.destination, dest)
            self.cloud._save(self.host, src)
        job.switched = True

    def _switch_over(self, job):
        uuid = job.guest['uuid']
        with self.cloud.locked():
            dest = self.cloud.load(job.destination)
            src = self.cloud.load(self.host)
            if job.subtype == vocab.BLOCK:
                src_dir = self._instance_dir(uuid)
                dest_dir = os.path.join(dest['info']['instances_path'], uuid)
                for disk in job.guest['disks']:
                    name = 'disk.' + disk['name']
                    shutil.copyfile(os.path.join(src_dir, name),
                                    os.path.join(dest_dir, name))
            dest['guests'][uuid] = dict(src['guests'][uuid], power_state='running')
            del src['guests'][uuid]
            self.cloud._save(job.destination, dest)
            self.cloud._save(self.host, src)
        job.switched = job.handed_over = True

    def get_migration_job(self, uuid):
        self._fault('get_migration_job')
        with self._jobs_lock:
            job = self._jobs.get(uuid)
        if job is None:
            return {'status': vocab.JOB_NONE}
        return job.stats()

    def wait_migration_job(self, uuid, timeout):
        with self._jobs_lock:
            job = self._jobs.get(uuid)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)

    def abort_migration(self, uuid):
        self._fault('abort_migration')
        with self._jobs_lock:
            job = self._jobs.get(uuid)
        if job is None:
            return {'status': vocab.JOB_NONE}
        if job.switched:
            return job.stats()  # post-copy cannot be undone: it completes
        job.abort.set()
        job.thread.join(30)
        return job.stats()

    def _steer(self, uuid, what):
        with self._jobs_lock:
            job = self._jobs.get(uuid)
        if job is None or job.stats()['status'] != vocab.JOB_RUNNING:
            raise exception.MigrationJobFailed(instance=uuid,
                                               reason='no running migration job')
        with job.lock:
            what(job.model)
        return job.stats()

    def set_max_downtime(self, uuid, downtime_ms):
        return self._steer(uuid, lambda m: m.set_max_downtime(float(downtime_ms)))

    def start_post_copy(self, uuid):
        return self._steer(uuid, lambda m: m.start_post_copy())

    def pause_guest(self, uuid):
        def pause(model):
            model.pause()
            with self.cloud.editing(self.host) as state:
                state['guests'][uuid]['power_state'] = 'paused'
        return self._steer(uuid, pause)

    # After switch-over. ------------------------------------------------------------
    def post_migration_source(self, guest, subtype):
        self._fault('post_migration_source')
        uuid = guest['uuid']
        if uuid in self.cloud.load(self.host)['guests']:
            raise exception.AgentStepFailed(
                step='post_migration_source', host=self.host,
                reason='guest %s still runs here' % uuid)
        if subtype == vocab.BLOCK:
            shutil.rmtree(self._instance_dir(uuid), ignore_errors=True)
        elif subtype == vocab.BLOCK_STORAGE:
            self._disconnect(guest)
        # file-level: the instance directory is shared and now the destination's.
        with self.cloud.editing(self.host) as state:
            state['ports'].pop(uuid, None)
        with self._jobs_lock:
            self._jobs.pop(uuid, None)

    def post_migration_destination(self, guest):
        self._fault('post_migration_destination')
        with self.cloud.editing(self.host) as state:
            current = state['guests'].get(guest['uuid'])
            if current is None or current['power_state'] != 'running':
                raise exception.AgentStepFailed(
                    step='post_migration_destination', host=self.host,
                    reason='guest %s does not run here' % guest['uuid'])
            state['ports'][guest['uuid']] = 'active'
        return self._public(current)


def _instance_dirs(path):
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if len(n) == 36 and n.count('-') == 4 and
                  os.path.isdir(os.path.join(path, n)))
