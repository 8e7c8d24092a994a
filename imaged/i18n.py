"""oslo.i18n glue: ``_()`` marks text a user reads in an exception."""

import oslo_i18n

_translators = oslo_i18n.TranslatorFactory(domain='imaged')

_ = _translators.primary
