"""Which of a host's PCI devices are offered to guests, and with which traits.

An operator lists passthrough devices in ``[pci] device_spec``: each value a JSON
object, or a JSON list of them, matching devices by address (a glob over
``DDDD:BB:SS.F``), vendor and product id; a match is reported to the conductor
as a nested provider with one PCI_DEVICE, carrying the spec's traits and, for a
``physical_network``, the trait ``CUSTOM_PHYSNET_<NAME>``. Devices no spec
matches stay the host's. A bad spec stops the agent at start with the value
named, rather than offering the wrong devices.
"""

import fnmatch
import json
import re
import xml.etree.ElementTree as ET

from oslo_config import cfg

from ferryman.common import exception

pci_group = cfg.OptGroup('pci', title='PCI passthrough devices')

pci_opts = [
    cfg.MultiStrOpt('device_spec', default=[],
                    help='PCI devices offered to guests: a JSON object, or a JSON '
                         'list of objects, per value, with any of "address" (glob '
                         'over DDDD:BB:SS.F, e.g. "0000:81:00.*"), "vendor_id" '
                         'and "product_id" (4 hex digits), "physical_network" '
                         '(adds the trait CUSTOM_PHYSNET_<NAME>) and "traits" '
                         '(comma-separated trait names). A device matching any '
                         'object is offered; every key given must match. Used '
                         'by the libvirt driver; the simulated one has [fake] '
                         'pci_devices.'),
]

KEYS = ('address', 'vendor_id', 'product_id', 'physical_network', 'traits')
_HEX4 = re.compile(r'^[0-9a-f]{4}$')
_ADDRESS_GLOB = re.compile(r'^[0-9a-fA-F:.*?\[\]-]+$')
_TRAIT = re.compile(r'^[A-Z][A-Z0-9_]*$')
_PHYSNET = re.compile(r'^[A-Za-z0-9_.-]+$')


def list_opts():
    return [(pci_group, pci_opts)]


def _bad(value, reason):
    return exception.InvalidArgument(name='[pci] device_spec', value=value,
                                     reason=reason)


def _hex4(entry, key):
    value = entry[key]
    text = value.lower() if isinstance(value, str) else value
    if isinstance(text, str) and text.startswith('0x'):
        text = text[2:]
    if not isinstance(text, str) or not _HEX4.match(text):
        raise _bad(value, '%s: expected 4 hex digits, e.g. "8086"' % key)
    return text


def physnet_trait(name):
    return 'CUSTOM_PHYSNET_' + re.sub(r'[^A-Z0-9]', '_', name.upper())


def parse_specs(values):
    """[{address, vendor_id, product_id, traits}] from ``device_spec`` values;
    InvalidArgument naming the bad value or key otherwise."""
    specs = []
    for raw in values or []:
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            raise _bad(raw, 'not JSON: %s' % exc)
        entries = loaded if isinstance(loaded, list) else [loaded]
        for entry in entries:
            if not isinstance(entry, dict) or not entry:
                raise _bad(raw, 'expected a non-empty JSON object (or a list of '
                                'them), got %s' % json.dumps(entry))
            unknown = sorted(set(entry) - set(KEYS))
            if unknown:
                raise _bad(raw, 'unknown key %r; known: %s' % (
                    unknown[0], ', '.join(KEYS)))
            spec = {'address': None, 'vendor_id': None, 'product_id': None,
                    'traits': []}
            if 'address' in entry:
                address = entry['address']
                if not isinstance(address, str) or not _ADDRESS_GLOB.match(address):
                    raise _bad(address, 'address: expected a glob over '
                                        'DDDD:BB:SS.F, e.g. "0000:81:00.*"')
                spec['address'] = address.lower()
            for key in ('vendor_id', 'product_id'):
                if key in entry:
                    spec[key] = _hex4(entry, key)
            if 'physical_network' in entry:
                net = entry['physical_network']
                if not isinstance(net, str) or not _PHYSNET.match(net):
                    raise _bad(net, 'physical_network: expected a name of '
                                    'letters, digits, "_", "." and "-"')
                spec['traits'].append(physnet_trait(net))
            if 'traits' in entry:
                traits = entry['traits']
                names = ([t.strip() for t in traits.split(',') if t.strip()]
                         if isinstance(traits, str) else None)
                if not names or any(not _TRAIT.match(t) for t in names):
                    raise _bad(traits, 'traits: expected comma-separated '
                                       'upper-case trait names, e.g. '
                                       '"CUSTOM_FAST_NIC"')
                spec['traits'].extend(names)
            specs.append(spec)
    return specs


def parse_nodedev(xml):
    """{address, vendor_id, product_id} of a libvirt PCI node device's XML."""
    cap = ET.fromstring(xml).find("./capability[@type='pci']")
    if cap is None:
        return None
    num = {k: int(cap.findtext(k), 0) for k in ('domain', 'bus', 'slot', 'function')}
    vendor, product = cap.find('vendor'), cap.find('product')
    return {'address': '%04x:%02x:%02x.%x' % (num['domain'], num['bus'], num['slot'],
                                              num['function']),
            'vendor_id': '%04x' % int(vendor.get('id'), 16),
            'product_id': '%04x' % int(product.get('id'), 16)}


def offered(devices, specs):
    """The devices some spec matches, as the conductor takes them: [{address,
    count: 1, traits}], the traits of every matching spec, sorted by address."""
    out = []
    for dev in sorted(devices, key=lambda d: d['address']):
        traits, matched = set(), False
        for spec in specs:
            if spec['address'] and not fnmatch.fnmatchcase(dev['address'],
                                                           spec['address']):
                continue
            if any(spec[k] and spec[k] != dev[k] for k in ('vendor_id', 'product_id')):
                continue
            matched = True
            traits.update(spec['traits'])
        if matched:
            out.append({'address': dev['address'], 'count': 1,
                        'traits': sorted(traits)})
    return out
