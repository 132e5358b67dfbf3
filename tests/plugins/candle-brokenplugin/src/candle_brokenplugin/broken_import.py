"""Entry point `broken_import`: a plugin module that cannot be imported, like one whose native
library is missing. The registry must record the error and carry on."""

from candle_brokenplugin import IMPORT_ERROR

raise ImportError(IMPORT_ERROR)
