"""[pci] device_spec: which of a host's PCI devices are offered, with which traits."""

import os
import subprocess
import sys

import pytest

from compute_agent import pci
from ferryman.common import exception

NODEDEV = """<device>
  <name>pci_0000_81_00_1</name>
  <parent>pci_0000_80_02_0</parent>
  <capability type='pci'>
    <class>0x020000</class>
    <domain>0</domain>
    <bus>129</bus>
    <slot>0</slot>
    <function>1</function>
    <product id='0x154d'>82599ES 10-Gigabit SFI/SFP+</product>
    <vendor id='0x8086'>Intel Corporation</vendor>
  </capability>
</device>"""

DEVICES = [
    {'address': '0000:81:00.1', 'vendor_id': '8086', 'product_id': '154d'},
    {'address': '0000:81:00.0', 'vendor_id': '8086', 'product_id': '154d'},
    {'address': '0000:00:02.0', 'vendor_id': '1af4', 'product_id': '1000'},
]


def test_libvirt_node_device_is_read_as_address_vendor_and_product():
    assert pci.parse_nodedev(NODEDEV) == {
        'address': '0000:81:00.1', 'vendor_id': '8086', 'product_id': '154d'}
    assert pci.parse_nodedev('<device><capability type="usb_device"/></device>') \
        is None


def test_a_device_is_offered_when_every_key_of_one_spec_matches():
    specs = pci.parse_specs([
        '{"address": "0000:81:00.*", "vendor_id": "0x8086", '
        '"physical_network": "data-net"}',
        '{"product_id": "154D", "traits": "CUSTOM_SRIOV, CUSTOM_FAST"}'])
    assert pci.offered(DEVICES, specs) == [
        {'address': '0000:81:00.0', 'count': 1,
         'traits': ['CUSTOM_FAST', 'CUSTOM_PHYSNET_DATA_NET', 'CUSTOM_SRIOV']},
        {'address': '0000:81:00.1', 'count': 1,
         'traits': ['CUSTOM_FAST', 'CUSTOM_PHYSNET_DATA_NET', 'CUSTOM_SRIOV']}]


def test_keys_narrow_a_spec_and_unmatched_devices_stay_the_hosts():
    one = pci.parse_specs(['[{"address": "0000:81:00.1"}, '
                           '{"vendor_id": "1af4", "product_id": "1001"}]'])
    assert [d['address'] for d in pci.offered(DEVICES, one)] == ['0000:81:00.1']
    wrong_product = pci.parse_specs(['{"vendor_id": "8086", "product_id": "10fb"}'])
    assert pci.offered(DEVICES, wrong_product) == []
    assert pci.offered(DEVICES, []) == []


@pytest.mark.parametrize('value, named', [
    ('not json', 'not json'),
    ('{"adress": "0000:81:00.1"}', 'adress'),
    ('{}', '{}'),
    ('["0000:81:00.1"]', '0000:81:00.1'),
    ('{"vendor_id": "80866"}', '80866'),
    ('{"product_id": 5453}', '5453'),
    ('{"address": "0000:81:00.1; rm"}', '0000:81:00.1; rm'),
    ('{"physical_network": "data net"}', 'data net'),
    ('{"traits": "custom_lower"}', 'custom_lower'),
    ('{"traits": ""}', "''"),
])
def test_a_bad_spec_is_refused_naming_the_bad_value(value, named):
    with pytest.raises(exception.InvalidArgument) as err:
        pci.parse_specs([value])
    assert named in str(err.value) and '[pci] device_spec' in str(err.value)


def test_an_agent_with_a_bad_spec_does_not_start(tmp_path):
    conf = tmp_path / 'agent.conf'
    conf.write_text('[DEFAULT]\nhost = compute1\nstate_path = %s\n'
                    'transport_url = kombu+memory:////\n'
                    '[compute]\nvirt_driver = libvirt\n'
                    '[auth]\ninsecure_allow_unsigned = true\n'
                    '[pci]\ndevice_spec = {"vendor_id": "intel"}\n' % tmp_path)
    agent = os.path.join(os.path.dirname(sys.executable), 'ferryman-compute-agent')
    done = subprocess.run([agent, '--config-file', str(conf)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done
    assert "Invalid value 'intel' for [pci] device_spec" in done.stderr
    assert 'Traceback' not in done.stderr
