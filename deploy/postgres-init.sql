-- First-start initialisation of the docker-compose PostgreSQL (docker-entrypoint-initdb.d runs it
-- once, on an empty data volume, as the `postgres` superuser).
--
-- Blocks connects as its own non-superuser, non-owner role `blocks`: superusers bypass row-level
-- security, which Blocks relies on to keep organizations apart, and owners could rewrite the log.
-- Its password is read from the container's POSTGRES_PASSWORD (psql \getenv, PostgreSQL 15+),
-- so no password is written in this file.
\set ON_ERROR_STOP on
\getenv blocks_password POSTGRES_PASSWORD

-- blocks_owner owns the tables and runs migrations; blocks (the API and workers) is a member of
-- blocks_app, which the migrations grant only INSERT and SELECT on the audit log.
CREATE ROLE blocks_owner LOGIN PASSWORD :'blocks_password';
CREATE ROLE blocks_app NOLOGIN;
CREATE ROLE blocks LOGIN PASSWORD :'blocks_password' IN ROLE blocks_app;
CREATE DATABASE blocks OWNER blocks_owner;

-- Temporal's auto-setup creates its databases if missing and tolerates existing ones;
-- temporal_visibility is left to it.
CREATE DATABASE temporal;
