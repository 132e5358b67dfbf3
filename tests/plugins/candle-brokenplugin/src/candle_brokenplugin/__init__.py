"""candle-brokenplugin: test-only backend plugins that fail on purpose (see the README)."""

IMPORT_ERROR = "libcandle_broken.so: cannot open shared object file (candle-brokenplugin fails on purpose)"
PROBE_ERROR = "the broken_probe driver crashed while counting devices (candle-brokenplugin fails on purpose)"
