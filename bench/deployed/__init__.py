"""The as-deployed benchmark: Blocks' API and worker processes beside bare Temporal and DBOS."""
