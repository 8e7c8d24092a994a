"""Glance access, image checks and conversion, and the base image cache."""
