"""The libvirt driver: real QEMU guests through libvirt-python."""
