"""The console: server-rendered pages for approvers, operators, auditors and admins under /console."""
