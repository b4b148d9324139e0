"""A throwaway certificate authority and a server certificate, for TLS tests.

Made with the openssl command line (no Python dependency): a CA, and a server
certificate it signs for 127.0.0.1 and localhost, valid for two days.
"""

import os
import subprocess


def _openssl(*args, cwd):
    res = subprocess.run(['openssl'] + list(args), cwd=cwd, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=60)
    if res.returncode != 0:
        raise RuntimeError('openssl %s failed: %s' % (args[0], res.stderr))


def make_ca_and_server(directory, names=('127.0.0.1', 'localhost')):
    """{'ca': path, 'cert': path, 'key': path} under ``directory`` (keys 0600)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
    _openssl('req', '-x509', *ec, '-keyout', 'ca.key', '-out', 'ca.pem',
             '-days', '2', '-subj', '/CN=ferryman test CA', cwd=directory)
    _openssl('req', *ec, '-keyout', 'server.key', '-out', 'server.csr',
             '-subj', '/CN=%s' % names[0], cwd=directory)
    sans = ','.join(('IP:%s' if n[0].isdigit() else 'DNS:%s') % n for n in names)
    with open(os.path.join(directory, 'server.ext'), 'w') as f:
        f.write('subjectAltName = %s\nbasicConstraints = CA:FALSE\n'
                'keyUsage = digitalSignature, keyEncipherment\n'
                'extendedKeyUsage = serverAuth\n' % sans)
    _openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey',
             'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2',
             '-extfile', 'server.ext', cwd=directory)
    for name in ('ca.key', 'server.key'):
        os.chmod(os.path.join(directory, name), 0o600)
    return {'ca': os.path.join(directory, 'ca.pem'),
            'cert': os.path.join(directory, 'server.pem'),
            'key': os.path.join(directory, 'server.key')}
