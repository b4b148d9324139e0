"""A live migration in simulated time: the simulated driver's hypervisor, and the
policy benchmark's.

Memory is copied in pre-copy passes: each pass sends what was dirty when it began
while the guest dirties more (capped at the pages it keeps rewriting, its working
set, by default all its memory). Switch-over happens when the
rest fits in the allowed downtime. The steering QEMU offers is modelled:
auto-converge (a CPU throttle of 20% after the second pass, +10% per pass, up to
99%), compression (more effective bandwidth, per the guest's compressibility),
pausing the guest (no more dirtying; the whole pause is downtime), and post-copy
(the guest runs on the destination at once; what is left is pulled afterwards).
"""

from ferryman.common import vocabulary as vocab

POST_COPY_SWITCH_MS = 30.0   # device state and the first pages on a post-copy switch


class MigrationModel(object):

    def __init__(self, memory_mb, dirty_rate_mibps, bandwidth_mibps, disk_mb=0.0,
                 max_downtime_ms=500.0, auto_converge=False, compressed=False,
                 compression_ratio=1.5, post_copy=False, working_set_mb=None):
        self.memory = float(memory_mb)
        # The pages the guest keeps rewriting: no pass re-sends more than these.
        self.working_set = min(self.memory, float(working_set_mb or memory_mb))
        self.dirty_rate = float(dirty_rate_mibps)
        self.bandwidth = float(bandwidth_mibps)
        self.max_downtime = max_downtime_ms / 1000.0
        self.auto_converge = auto_converge
        self.compressed = compressed
        self.compression_ratio = compression_ratio
        self.post_copy_enabled = post_copy
        self.elapsed = 0.0
        self.phase = 'disk' if disk_mb else 'precopy'
        self.disk_left = float(disk_mb)
        self.disk_total = float(disk_mb)
        self.iteration = 1
        self.pass_left = self.memory   # still to send in this pass
        self.dirtied = 0.0             # dirtied since this pass began
        self.throttle = 0.0
        self.sent = 0.0
        self.downtime = None
        self.paused_at = None
        self.switched_at = None
        self.error = None

    # What QEMU would report. -----------------------------------------------------
    @property
    def effective_bandwidth(self):
        return self.bandwidth * (self.compression_ratio if self.compressed else 1.0)

    @property
    def effective_dirty_rate(self):
        if self.phase in ('postcopy', 'done') or self.paused_at is not None:
            return 0.0
        return self.dirty_rate * (1.0 - self.throttle)

    @property
    def finished(self):
        return self.phase in ('done', 'failed', 'cancelled')

    def stats(self):
        remaining = min(self.memory, self.pass_left + self.dirtied)
        status = {'done': vocab.JOB_COMPLETED, 'failed': vocab.JOB_FAILED,
                  'cancelled': vocab.JOB_CANCELLED}.get(self.phase, vocab.JOB_RUNNING)
        return {'status': status, 'phase': self.phase, 'elapsed_s': self.elapsed,
                'copying_disks': self.phase in ('disk', 'disk-then-post'),
                'iteration': self.iteration if self.phase != 'disk' else 0,
                'memory_total_mb': self.memory,
                'memory_remaining_mb': 0.0 if self.phase == 'done' else remaining,
                'data_total_mb': self.disk_total + self.sent + (
                    0.0 if self.phase == 'done' else remaining + self.disk_left),
                'data_processed_mb': self.disk_total - self.disk_left + self.sent,
                'dirty_rate_mibps': self.effective_dirty_rate,
                'bandwidth_mibps': self.effective_bandwidth,
                'throttle_percent': round(self.throttle * 100),
                'max_downtime_ms': self.max_downtime * 1000.0,
                'post_copy': self.phase == 'postcopy' or self.switched_at is not None,
                'paused': self.paused_at is not None,
                'downtime_ms': (None if self.downtime is None
                                else round(self.downtime * 1000.0, 3)),
                'error': self.error}

    # Steering. -------------------------------------------------------------------
    def set_max_downtime(self, downtime_ms):
        self.max_downtime = downtime_ms / 1000.0

    def start_post_copy(self):
        if not self.post_copy_enabled:
            raise ValueError('post-copy was not enabled when the migration started')
        if self.phase in ('precopy', 'disk') and not self.finished:
            # Disks (block) must be mirrored before the switch: finish them first.
            self.phase = 'postcopy' if self.phase == 'precopy' else 'disk-then-post'
            if self.phase == 'postcopy':
                self._switch_to_post_copy()

    def _switch_to_post_copy(self):
        self.switched_at = self.elapsed
        self.downtime = POST_COPY_SWITCH_MS / 1000.0
        self.elapsed += self.downtime
        # A page still to send and dirtied again is one page: never more than memory.
        self.pass_left = min(self.memory, self.pass_left + self.dirtied)
        self.dirtied = 0.0

    def pause(self):
        if self.paused_at is None and not self.finished:
            self.paused_at = self.elapsed

    def abort(self):
        if not self.finished and self.phase != 'postcopy':
            self.phase = 'cancelled'
            self.error = 'aborted'

    def fail(self, reason):
        if not self.finished:
            self.phase = 'failed'
            self.error = reason

    # Time. -----------------------------------------------------------------------
    def run_for(self, seconds):
        """Run ``seconds`` of simulated time (or until the job ends)."""
        end = self.elapsed + seconds
        while not self.finished and self.elapsed < end - 1e-12:
            budget = end - self.elapsed
            if self.phase in ('disk', 'disk-then-post'):
                self._copy_disk(budget)
            elif self.phase == 'postcopy':
                self._pull(budget)
            else:
                self._precopy(budget)

    def _copy_disk(self, budget):
        dt = min(budget, self.disk_left / self.bandwidth)
        self.disk_left -= dt * self.bandwidth
        self.elapsed += dt
        if self.disk_left <= 1e-9:
            self.disk_left = 0.0
            if self.phase == 'disk-then-post':
                self.phase = 'postcopy'
                self._switch_to_post_copy()
            else:
                self.phase = 'precopy'

    def _pull(self, budget):
        bw = self.effective_bandwidth
        dt = min(budget, self.pass_left / bw)
        self.pass_left -= dt * bw
        self.sent += dt * bw
        self.elapsed += dt
        if self.pass_left <= 1e-9:
            self.pass_left = 0.0
            self.phase = 'done'

    def _precopy(self, budget):
        bw = self.effective_bandwidth
        dt = min(budget, self.pass_left / bw)
        self.pass_left -= dt * bw
        self.sent += dt * bw
        self.dirtied = min(self.working_set,
                           self.dirtied + self.effective_dirty_rate * dt)
        self.elapsed += dt
        if self.pass_left > 1e-9:
            return
        # End of a pass: switch over if the rest fits in the allowed downtime.
        if self.dirtied / bw <= self.max_downtime or self.dirtied <= 1e-9:
            self.downtime = self.dirtied / bw
            if self.paused_at is not None:
                self.downtime += self.elapsed - self.paused_at
            self.elapsed += self.dirtied / bw
            self.sent += self.dirtied
            self.pass_left = self.dirtied = 0.0
            self.phase = 'done'
            return
        self.iteration += 1
        if self.auto_converge and self.iteration >= 3:
            self.throttle = 0.2 if self.throttle == 0 else min(0.99, self.throttle + 0.1)
        self.pass_left, self.dirtied = self.dirtied, 0.0
