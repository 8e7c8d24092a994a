"""Command line entry points.

oslo.messaging imports oslo.service, and oslo.service picks its concurrency
backend on first use, so the native-thread backend is selected here, before
any entry point module imports either of them.
"""

import warnings

# futurist imports eventlet when it is installed (oslo.service still depends
# on it); imaged never uses it, so its deprecation banner is noise.
warnings.filterwarnings('ignore', message='\nEventlet is deprecated')

from oslo_service import backend  # noqa: E402

backend.init_backend(backend.BackendType.THREADING)
