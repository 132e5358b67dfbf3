"""The conformance kit on the numpy CPU backend."""

import candle.testing

TestCPU = candle.testing.conformance_suite("cpu")
