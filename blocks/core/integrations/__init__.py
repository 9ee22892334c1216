"""What leaves Blocks for the organization's own systems, as plain data: event types and bodies."""
