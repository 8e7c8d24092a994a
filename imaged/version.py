"""The version imaged reports (from pbr's package metadata)."""

import pbr.version

version_info = pbr.version.VersionInfo('imaged')


def version_string():
    return version_info.version_string()
