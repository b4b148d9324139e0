"""Volume connectors: attach a shared block-storage volume to this host.

The file-backed connector serves volumes kept as image files in a directory every
host sees. A connection is a link in this host's private connections directory;
the guest's disk points at the link, so only a host that connected the volume can
run the guest, as with iSCSI or RBD devices. Volume data is never touched.
"""

import os


class FileVolumeConnector(object):

    def __init__(self, volume_dir, connections_dir):
        self.volume_dir = volume_dir
        self.connections_dir = connections_dir

    def init_host(self):
        os.makedirs(self.connections_dir, exist_ok=True)

    def volume_path(self, volume_id):
        return os.path.join(self.volume_dir, volume_id + '.img')

    def device_path(self, volume_id):
        """What a guest's disk points at on a host that connected the volume."""
        return os.path.join(self.connections_dir, volume_id)

    def connect(self, volume_id, owner):
        target = self.volume_path(volume_id)
        if not os.path.exists(target):
            from ferryman.common import exception
            raise exception.AgentStepFailed(step='connect_volumes', host='-',
                                            reason='volume %s not found at %s'
                                            % (volume_id, target))
        link = self.device_path(volume_id)
        if os.path.islink(link) and os.readlink(link) == target:
            return link
        tmp = link + '.tmp'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        return link

    def disconnect(self, volume_id, owner):
        try:
            os.unlink(self.device_path(volume_id))
        except FileNotFoundError:
            pass

    def connections(self):
        return sorted(n for n in os.listdir(self.connections_dir)
                      if not n.endswith('.tmp'))
