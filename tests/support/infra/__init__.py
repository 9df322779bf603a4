"""The real services the tests and benchmarks run against, each stopped by its process id."""
