"""Simulated compute agents in processes of their own, for scale runs.

A hundred agents inside the conductor's interpreter measure mostly their own
threads fighting over its lock; a few agent processes over RabbitMQ leave the
conductor's process to the conductor. Each process serves a slice of the hosts
with the simulated driver on a shared state directory (the hypervisors' data
plane, see :mod:`compute_agent.virt.fake`), reads its orders as one JSON line on
stdin, says ``ready`` on stdout, and stops when stdin closes, so it never
outlives the run that started it.
"""

import json
import os
import select
import subprocess
import sys
import time

from ferryman.common import exception
from ferryman.common import validation
from ferryman.common import rpc
from ferryman.sim import services as sim_services

READY = 'ready'


def _cpu_s(pid):
    """User and system CPU seconds of a live process, from /proc."""
    with open('/proc/%d/stat' % pid) as f:
        # Fields after the command name, which may hold spaces: utime, stime
        # are the 12th and 13th of them.
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class AgentPool(object):
    """``processes`` processes serving ``hosts`` ({host: name of the instance
    directory it shares, or None}) between them, configured with ``overrides``
    (as :class:`ferryman.sim.cloud.SimCloud`'s)."""

    def __init__(self, hosts, overrides, processes=2, log_dir=None,
                 ready_timeout=120.0):
        validation.whole_number('agent processes', processes)
        if not overrides.get('transport_url', '').startswith('rabbit://'):
            raise exception.InvalidArgument(
                name='transport_url', value=overrides.get('transport_url'),
                reason='agents in other processes need a broker (rabbit://)')
        self.hosts = dict(hosts)
        self.overrides = dict(overrides)
        self.processes = min(processes, max(1, len(self.hosts)))
        self.log_dir = log_dir or overrides['state_path']
        self.ready_timeout = ready_timeout
        self.procs = []

    def start(self):
        names = sorted(self.hosts)
        try:
            for i in range(self.processes):
                part = {h: self.hosts[h] for h in names[i::self.processes]}
                log = open(self._log(i), 'ab')
                proc = subprocess.Popen(
                    [sys.executable, '-m', 'ferryman.sim.agent_pool'],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    text=True)
                log.close()
                self.procs.append(proc)
                proc.stdin.write(json.dumps({'hosts': part,
                                             'overrides': self.overrides}) + '\n')
                proc.stdin.flush()
            deadline = time.monotonic() + self.ready_timeout
            for i, proc in enumerate(self.procs):
                ready, _, _ = select.select(
                    [proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    proc.kill()
                line = proc.stdout.readline().strip()
                if line != READY:
                    # The log's directory may go with the cloud: quote its end.
                    with open(self._log(i), errors='replace') as f:
                        tail = f.read()[-2000:]
                    raise exception.FerrymanError(
                        'agent process %d did not start (said %r, exit %s); the '
                        'end of its log:\n%s' % (i, line, proc.wait(), tail))
        except BaseException:
            self.stop()
            raise
        return self

    def _log(self, i):
        return os.path.join(self.log_dir, 'agents-%d.log' % i)

    def cpu_s(self):
        """CPU seconds the agent processes have used so far."""
        return sum(_cpu_s(p.pid) for p in self.procs if p.poll() is None)

    def stop(self, timeout=30.0):
        for proc in self.procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    orders = json.loads(sys.stdin.readline())
    rpc.quiet_messaging_logs()
    services = [sim_services.start_agent(orders['overrides'], host, shared)
                for host, shared in sorted(orders['hosts'].items())]
    print(READY, flush=True)
    # The parent closes stdin to stop us, or dies, which closes it too.
    sys.stdin.read()
    sim_services.stop_services(services)


if __name__ == '__main__':
    main()
