"""ferryman-compute-agent: one per hypervisor host, named by [DEFAULT] host."""

import sys

from ferryman.cmd import service


def main():
    from compute_agent import service as agent_service
    return service.run('ferryman-compute-agent', agent_service.ComputeService)


if __name__ == '__main__':
    sys.exit(main())
