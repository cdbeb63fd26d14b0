"""The benchmarking toolkit behind `mininet bench`: timing harness, saved runs, peak, compare, plots."""
