"""SCIM provisioning data: its tables and the organization's SCIM token (tables.py), users made,
linked and deactivated by provisioning (provisioning.py) and provisioned groups (groups.py)."""
