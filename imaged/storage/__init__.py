"""Disk backends. Only this package talks to Ceph."""
