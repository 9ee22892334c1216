#!/bin/sh
# Generates the secrets of the docker-compose deployment: one env file per service in
# deploy/secrets/ (mode 0600, directory 0700, ignored by git and by the image build), each
# holding only what that service needs:
#
#   postgres.env  the superuser's password and the passwords the first start gives the roles
#   temporal.env  the `temporal` role's password (Temporal's own databases only)
#   migrate.env   the table owner's URL (blocks_owner), the payload and master keys
#   api.env       the app role's URL (blocks), the payload and master keys, the audit PUBLIC key
#   worker.env    the app role's URL (blocks), the payload and master keys, the audit SIGNING key
#
# Every password and key is new and random (openssl). The passwords are hex, so they go into
# database URLs unescaped. Run it once, before the first `docker compose up`:
#
#   sh deploy/generate-secrets.sh [DIR]      # DIR defaults to deploy/secrets next to this script
#
# It refuses to overwrite existing files: PostgreSQL keeps the passwords it was initialised with
# (deploy/postgres-init.sql runs only on an empty volume), and history encrypted under the
# payload keys cannot be read without them. Back the files up as you would the data itself.
set -eu

dir=${1:-"$(cd "$(dirname "$0")" && pwd)/secrets"}
umask 077

for service in postgres temporal migrate api worker; do
    if [ -e "$dir/$service.env" ]; then
        echo "$dir/$service.env exists; refusing to replace secrets a deployment may be using" >&2
        exit 1
    fi
done
command -v openssl >/dev/null || { echo "openssl is needed to generate the secrets" >&2; exit 1; }
mkdir -p "$dir"
chmod 700 "$dir"

password() { openssl rand -hex 24; }
aes_key() { printf '%s:%s' "$1" "$(openssl rand -base64 32)"; }

superuser_password=$(password)
owner_password=$(password)
app_password=$(password)
temporal_password=$(password)
payload_keys=$(aes_key k1)
master_keys=$(aes_key m1)

# The checkpoint signing key: an Ed25519 key whose seed only the worker gets. A PKCS#8 DER
# Ed25519 key ends with its 32-byte seed, and its DER public key with the 32 raw public bytes.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl genpkey -algorithm ed25519 -outform DER -out "$work/signing.der"
signing_seed=$(tail -c 32 "$work/signing.der" | openssl base64 -A)
public_key=$(openssl pkey -inform DER -in "$work/signing.der" -pubout -outform DER \
    | tail -c 32 | openssl base64 -A)

app_url="postgresql://blocks:$app_password@postgres:5432/blocks"
owner_url="postgresql://blocks_owner:$owner_password@postgres:5432/blocks"

cat >"$dir/postgres.env" <<EOF
POSTGRES_PASSWORD=$superuser_password
DB_OWNER_PASSWORD=$owner_password
DB_APP_PASSWORD=$app_password
DB_TEMPORAL_PASSWORD=$temporal_password
EOF

cat >"$dir/temporal.env" <<EOF
POSTGRES_PWD=$temporal_password
EOF

# Settings require BLOCKS_DATABASE_URL in production; for the migrate job it is the owner's URL
# too, so that job holds no password but the owner's.
cat >"$dir/migrate.env" <<EOF
BLOCKS_MIGRATION_DATABASE_URL=$owner_url
BLOCKS_DATABASE_URL=$owner_url
BLOCKS_PAYLOAD_KEYS=$payload_keys
BLOCKS_MASTER_KEYS=$master_keys
BLOCKS_AUDIT_PUBLIC_KEYS=s1:$public_key
EOF

cat >"$dir/api.env" <<EOF
BLOCKS_DATABASE_URL=$app_url
BLOCKS_PAYLOAD_KEYS=$payload_keys
BLOCKS_MASTER_KEYS=$master_keys
BLOCKS_AUDIT_PUBLIC_KEYS=s1:$public_key
EOF

cat >"$dir/worker.env" <<EOF
BLOCKS_DATABASE_URL=$app_url
BLOCKS_PAYLOAD_KEYS=$payload_keys
BLOCKS_MASTER_KEYS=$master_keys
BLOCKS_AUDIT_SIGNING_KEY=s1:$signing_seed
EOF

echo "secrets written to $dir (postgres, temporal, migrate, api, worker .env)"
