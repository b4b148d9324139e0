"""ferryman-api: the Nova-compatible compute API."""

import sys

from ferryman.cmd import service


def main():
    from api import service as api_service
    return service.run('ferryman-api', api_service.APIService)


if __name__ == '__main__':
    sys.exit(main())
