"""`python -m blocks.cli`, as `blocks dev` starts the API and the worker."""

from blocks.cli import app

app()
