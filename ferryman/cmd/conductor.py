"""ferryman-conductor: accepts migrations and runs their flows."""

import sys

from ferryman.cmd import service


def main():
    from conductor import service as conductor_service
    return service.run('ferryman-conductor', conductor_service.ConductorService)


if __name__ == '__main__':
    sys.exit(main())
