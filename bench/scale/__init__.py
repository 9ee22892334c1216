"""The scale benchmark: 10,000 parked runs in one organization, and 10 organizations of 1,000."""
