"""The image source: Glance's record, locations and bytes; format checks
and conversion."""
