"""What reaches a libvirt URI, a path or XML is validated, never interpolated."""

import xml.etree.ElementTree as ET

import pytest

from compute_agent.virt.libvirt import driver
from ferryman.common import exception


@pytest.mark.parametrize('name', ['evil/system?socket=/x', 'a b', '<host>', '',
                                  'host;rm', '-dash', 'x' * 300, None, 42])
def test_bad_host_names_are_refused(name):
    with pytest.raises(exception.InvalidArgument) as err:
        driver.validate_host(name)
    assert repr(name) in str(err.value)


@pytest.mark.parametrize('name', ['compute1', 'host-2.example.org', 'a'])
def test_good_host_names_pass(name):
    assert driver.validate_host(name) == name


@pytest.mark.parametrize('value', ['../../etc', 'ABCDEFAB-1234-1234-1234-123456789012',
                                   '1234', 'x' * 36])
def test_bad_uuids_are_refused(value):
    with pytest.raises(exception.InvalidArgument):
        driver.validate_uuid(value)


def test_metadata_escapes_xml():
    xml = driver.metadata_xml('0b5e6a5a-6b0a-4c51-8d2c-3f1b2a9e0c11',
                              '<evil>&"name"', volumes=['vol-1'])
    ns = {'f': driver.NS}
    root = ET.fromstring(xml)
    assert root.findtext('f:name', namespaces=ns) == '<evil>&"name"'
    assert [v.get('id') for v in root.findall('f:volumes/f:volume', ns)] == ['vol-1']
    with pytest.raises(exception.InvalidArgument):
        driver.metadata_xml('0b5e6a5a-6b0a-4c51-8d2c-3f1b2a9e0c11', 'n',
                            volumes=['../x'])


def test_a_guests_numa_cells_are_read_from_its_domain_xml():
    dom = ET.fromstring(
        "<domain><cpu><numa>"
        "<cell id='0' cpus='0-3,^2' memory='1048576' unit='KiB'/>"
        "<cell id='1' cpus='2,4-5' memory='2' unit='GiB'/>"
        "<cell id='2' cpus='6' memory='536870912'/>"
        "</numa></cpu></domain>")
    # No unit means KiB, as libvirt reads it.
    assert driver.guest_numa_topology(dom) == [
        {'vcpus': 3, 'memory_mb': 1024}, {'vcpus': 3, 'memory_mb': 2048},
        {'vcpus': 1, 'memory_mb': 512 * 1024}]
    assert driver.guest_numa_topology(ET.fromstring('<domain><vcpu>2</vcpu>'
                                                    '</domain>')) == []
    odd = ET.fromstring("<domain><cpu><numa><cell id='0' cpus='0' memory='1' "
                        "unit='parsecs'/></numa></cpu></domain>")
    assert driver.guest_numa_topology(odd) == []


def test_metadata_carries_a_guests_owner_when_known():
    uuid = '0b5e6a5a-6b0a-4c51-8d2c-3f1b2a9e0c11'
    ns = {'f': driver.NS}
    root = ET.fromstring(driver.metadata_xml(uuid, 'n', project_id='p1',
                                             user_id='u1'))
    assert (root.findtext('f:project_id', namespaces=ns),
            root.findtext('f:user_id', namespaces=ns)) == ('p1', 'u1')
    root = ET.fromstring(driver.metadata_xml(uuid, 'n'))
    assert root.find('f:project_id', ns) is None
    with pytest.raises(exception.InvalidArgument):
        driver.metadata_xml(uuid, 'n', project_id='<p>')


@pytest.mark.parametrize('text, read', [(None, None), ('  p1 ', 'p1'), ('', None),
                                        ('a b', None), ('x' * 65, None),
                                        ('u@example.org', 'u@example.org')])
def test_an_owner_in_domain_metadata_is_read_only_when_a_report_can_carry_it(
        text, read):
    assert driver._owner(text) == read
