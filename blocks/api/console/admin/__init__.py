"""The admin console pages: the index (pages.py, which includes the others' routers), members and
roles, invites, groups, API keys, security settings and integrations, sessions; common.py holds
what they share."""
