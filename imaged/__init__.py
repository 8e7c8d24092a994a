"""imaged: a compute-side image agent that puts root disks on Ceph."""
