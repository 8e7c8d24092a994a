# Select oslo.service's native-thread backend before any test module
# imports oslo.messaging or oslo.service (as the daemon does).
import imaged.cmd  # noqa: F401
