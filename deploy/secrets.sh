#!/bin/sh
# Writes the compose stack's secrets once (an existing file is kept, so re-running is safe):
#   signing_key        ARCLIP_SIGNING_KEY, shared by every replica (signed asset URLs)
#   postgres_password  PostgreSQL's arclip user
#   database_url       ARCLIP_DATABASE_URL with that password
#   s3_config     SeaweedFS's S3 identity (its access key and secret key)
#   s3_credentials     the same keys for boto3 (AWS_SHARED_CREDENTIALS_FILE)
# Usage: deploy/secrets.sh [DIR]   (default: deploy/secrets)
set -eu
dir=${1:-"$(dirname "$0")/secrets"}
mkdir -p "$dir"
chmod 700 "$dir"  # the folder keeps other users out; the files stay readable to the containers' own users
umask 022

random() { LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"; }

write() {  # write NAME CONTENT: only when NAME does not exist yet
    if [ -e "$dir/$1" ]; then
        echo "kept $dir/$1"
    else
        printf '%s\n' "$2" >"$dir/$1"
        echo "wrote $dir/$1"
    fi
}

write signing_key "$(random 64)"
write postgres_password "$(random 32)"
write database_url "postgresql+asyncpg://arclip:$(cat "$dir/postgres_password")@postgres:5432/arclip"
if [ ! -e "$dir/s3_config" ] || [ ! -e "$dir/s3_credentials" ]; then
    access_key="arclip$(random 14)"
    secret_key=$(random 40)
    rm -f "$dir/s3_config" "$dir/s3_credentials"  # the two must hold the same keys
    write s3_config "{\"identities\": [{\"name\": \"arclip\", \"credentials\": [{\"accessKey\": \"$access_key\", \"secretKey\": \"$secret_key\"}], \"actions\": [\"Admin\", \"Read\", \"Write\", \"List\", \"Tagging\"]}]}"
    write s3_credentials "[default]
aws_access_key_id = $access_key
aws_secret_access_key = $secret_key"
else
    echo "kept $dir/s3_config and $dir/s3_credentials"
fi
