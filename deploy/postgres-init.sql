-- First-start initialisation of the docker-compose PostgreSQL (docker-entrypoint-initdb.d runs it
-- once, on an empty data volume, as the `postgres` superuser).
--
-- Blocks connects as its own non-superuser role `blocks`, owner of the `blocks` database:
-- superusers bypass row-level security, which Blocks relies on to keep organizations apart.
-- Its password is read from the container's POSTGRES_PASSWORD (psql \getenv, PostgreSQL 15+),
-- so no password is written in this file.
\set ON_ERROR_STOP on
\getenv blocks_password POSTGRES_PASSWORD

CREATE ROLE blocks LOGIN PASSWORD :'blocks_password';
CREATE DATABASE blocks OWNER blocks;

-- Temporal's auto-setup creates its databases if missing and tolerates existing ones;
-- temporal_visibility is left to it.
CREATE DATABASE temporal;
