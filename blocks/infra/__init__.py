"""Adapters to the outside: settings, database, Temporal, embedded servers, hashing."""
