"""Command line entry points.

oslo.messaging imports oslo.service, and oslo.service picks its concurrency
backend on first use, so the native-thread backend is selected here, before
any entry point module imports either of them.
"""

from oslo_service import backend

backend.init_backend(backend.BackendType.THREADING)
