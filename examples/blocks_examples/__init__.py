"""Blocks' example workflows, packaged the way an author packages theirs.

A worker serves them with `blocks worker --workflows blocks_examples` (what `blocks dev` does by
default): every `BlocksWorkflow` subclass defined in the package's modules is served. This file
imports none of them, so a run's sandbox loads only its own workflow's module.
"""
