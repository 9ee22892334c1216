"""Agents: the registry, agent tokens and the tasks in flight to remote agents."""
