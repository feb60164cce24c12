"""Side-by-side measurements (not timed tests): each bench_*.py has `main(argv) -> dict` and prints ratios
against a baseline measured in the same run. `python -m benchmarks [name ...]` runs them."""
