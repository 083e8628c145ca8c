#!/usr/bin/env bash
# Writes the secrets compose.yaml mounts, into deploy/compose/secrets/ (or the
# directory given as the first argument). Run it once before the first
# `docker compose up`; running it again keeps every file that exists, so it
# never rotates a key by accident. Needs OpenSSL 1.1.1 or newer (Ed25519).
#
#   rally-access-signing-key  the lobby's access-token signing seed (hex, one a line)
#   rally-token-signing-key   the matchmaker's connect-token signing seed (hex)
#   postgres-password         PostgreSQL's password for the role `rally`
#   grafana-admin-password    Grafana's `admin` password
#   lobby.env                 RALLY_DATABASE_URL
#   matchmaker.env            RALLY_ACCESS_TOKEN_KEYS: the public halves of the lobby's
#                             seeds (the matchmaker never reads the lobby's database)
#   shard.env                 RALLY_TOKEN_KEYS: the matchmaker's public key, as key id 1
#   bots.env                  RALLY_BOT_PASSWORD (the bots' accounts)
#
# Each role's env file holds only variables that role reads. matchmaker.env and
# shard.env are derived from the seeds on every run, so after appending a new
# seed to rally-access-signing-key (a rotation: the last line signs, earlier
# ones still verify) a rerun trusts every key of the file.
#
# The directory is 0700; the files are 0644 because compose bind-mounts them
# as they are and the containers read them as their own users (rally 10001,
# postgres 999, grafana 472), not as yours.
set -euo pipefail

dir=${1:-"$(cd "$(dirname "$0")" && pwd)/secrets"}
command -v openssl >/dev/null || { echo "keys.sh: openssl is needed (1.1.1 or newer, for Ed25519)" >&2; exit 1; }
mkdir -p "$dir"
chmod 0700 "$dir"

hex() { od -An -tx1 -v | tr -d ' \n'; }

# A new Ed25519 private key's 32-byte seed, as 64 hex digits.
new_seed() {
    openssl genpkey -algorithm ed25519 -outform DER | tail -c 32 | hex
}

# The public key of a seed (64 hex digits), as 64 hex digits: the seed wrapped
# in its PKCS#8 DER header, handed to openssl.
public_of() {
    [[ $1 =~ ^[0-9a-f]{64}$ ]] || { echo "keys.sh: $1 is not a 64-hex-digit seed" >&2; return 1; }
    local der
    der=$(printf '302e020100300506032b657004220420%s' "$1" | sed 's/../\\x&/g')
    # shellcheck disable=SC2059 # the format is the bytes, built above from hex digits only
    printf "$der" | openssl pkey -inform DER -pubout -outform DER | tail -c 32 | hex
}

# Writes $2 to $dir/$1 unless that file exists.
keep_or_write() {
    local path="$dir/$1"
    if [[ -e $path ]]; then
        echo "kept    $path"
    else
        (umask 022 && printf '%s\n' "$2" >"$path")
        echo "wrote   $path"
    fi
}

keep_or_write rally-access-signing-key "$(new_seed)"
keep_or_write rally-token-signing-key "$(new_seed)"
keep_or_write postgres-password "$(openssl rand -hex 24)"
keep_or_write grafana-admin-password "$(openssl rand -hex 16)"
keep_or_write bots.env "RALLY_BOT_PASSWORD=$(openssl rand -hex 16)"
password=$(tr -d '\n' <"$dir/postgres-password")
[[ $password =~ ^[0-9A-Za-z._~-]+$ ]] || { echo "keys.sh: $dir/postgres-password must be URL-safe ([0-9A-Za-z._~-])" >&2; exit 1; }
database_url="postgres://rally:$password@postgres:5432/rally"
keep_or_write lobby.env "RALLY_DATABASE_URL=$database_url"

# Every line of the lobby's key file still verifies, so the matchmaker trusts them all.
access_public=()
while read -r seed; do
    [[ -z $seed || $seed == \#* ]] && continue
    access_public+=("$(public_of "$seed")")
done <"$dir/rally-access-signing-key"
(( ${#access_public[@]} > 0 )) || { echo "keys.sh: $dir/rally-access-signing-key holds no seed" >&2; exit 1; }
token_public=$(public_of "$(tr -d '\n' <"$dir/rally-token-signing-key")")
# Key id 1: the matchmaker's --token-key-id default, which compose.yaml keeps.
(
    umask 022
    IFS=,
    printf 'RALLY_ACCESS_TOKEN_KEYS=%s\n' "${access_public[*]}" >"$dir/matchmaker.env"
    printf 'RALLY_TOKEN_KEYS=1:%s\n' "$token_public" >"$dir/shard.env"
)
echo "derived $dir/matchmaker.env $dir/shard.env"
