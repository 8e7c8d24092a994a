"""The image cache manager: bases in Ceph and local base files, made once,
evicted and purged."""
