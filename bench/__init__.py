"""Side-by-side benchmarks of Blocks against bare Temporal and plain PostgreSQL inserts."""
