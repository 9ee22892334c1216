-- First-start initialisation of the docker-compose PostgreSQL (docker-entrypoint-initdb.d runs it
-- once, on an empty data volume, as the `postgres` superuser).
--
-- Each role has its own password, so no credential opens more than its holder needs:
--   postgres      superuser; its password stays in the postgres container (POSTGRES_PASSWORD)
--   blocks_owner  owns the Blocks tables and runs migrations (the migrate job only)
--   blocks        the API and workers; a member of blocks_app, which the migrations grant only
--                 INSERT and SELECT on the audit log. Not a superuser (superusers bypass the
--                 row-level security that keeps organizations apart) and not the owner (who
--                 could rewrite the log)
--   temporal      owns Temporal's two databases and nothing of Blocks
-- The passwords come from the container's environment (deploy/secrets/postgres.env, written by
-- deploy/generate-secrets.sh) through psql's \getenv (PostgreSQL 15+): none is in this file.
\set ON_ERROR_STOP on
\getenv owner_password DB_OWNER_PASSWORD
\getenv app_password DB_APP_PASSWORD
\getenv temporal_password DB_TEMPORAL_PASSWORD

-- \getenv leaves a variable unset when its environment variable is missing: stop with an error
-- (ON_ERROR_STOP) rather than create a role without the password meant for it.
\if :{?owner_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'DB_OWNER_PASSWORD is not set: run deploy/generate-secrets.sh'; END $$;
\endif
\if :{?app_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'DB_APP_PASSWORD is not set: run deploy/generate-secrets.sh'; END $$;
\endif
\if :{?temporal_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'DB_TEMPORAL_PASSWORD is not set: run deploy/generate-secrets.sh'; END $$;
\endif

CREATE ROLE blocks_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE blocks_app NOLOGIN;
CREATE ROLE blocks LOGIN PASSWORD :'app_password' IN ROLE blocks_app;
CREATE DATABASE blocks OWNER blocks_owner;
-- Only Blocks' roles may connect to its database (PUBLIC may by default), and the same for
-- Temporal's below: one service's credential opens no other service's database.
REVOKE ALL ON DATABASE blocks FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE blocks TO blocks_app;

-- Temporal's auto-setup runs with SKIP_DB_CREATE=true and creates its schemas in these, as
-- their owner; it needs no superuser.
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
REVOKE ALL ON DATABASE temporal, temporal_visibility FROM PUBLIC;
