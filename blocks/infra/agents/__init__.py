"""Agents: the A2A SDK behind agent cards, and the PubNub transport."""
