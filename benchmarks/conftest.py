"""pytest-benchmark comparisons: ``pytest benchmarks/ --benchmark-only`` (add --benchmark-compare to diff runs).

One benchmark group per shape; in each group fastlstm, the reference (small shapes), torch and onnxruntime
run on the same weights and input. Peers that are not installed are skipped. In CI the suite runs with
--benchmark-disable as a smoke test (each benchmark once), so it cannot rot.
"""
