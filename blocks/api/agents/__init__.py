"""Routes for remote agents: the registry, tokens, metrics, the agent session and the relay."""
