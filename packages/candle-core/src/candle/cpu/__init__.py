"""The numpy CPU backend. `candle.cpu.plugin` registers it; `candle.cpu.backend` holds the kernels."""
