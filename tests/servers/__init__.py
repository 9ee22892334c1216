"""Local stand-ins for services outside Blocks, each run in a process of its own for tests and benchmarks."""
