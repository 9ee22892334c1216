"""The FastAPI layer: authentication, tenant scope, permissions, problem+json errors."""
