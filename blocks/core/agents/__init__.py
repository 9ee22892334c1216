"""Agents: the protocol Blocks and remote agents speak, and agent cards (pure)."""
