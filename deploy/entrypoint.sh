#!/bin/sh
# Secrets as files: ARCLIP_NAME_FILE=/run/secrets/x sets ARCLIP_NAME to the file's contents
# (the *_FILE convention of the official images), because compose and swarm hand secrets
# to a container as files, never as variables. Then runs the command (`arclip serve`).
set -eu
for var in $(env | sed -n 's/^\(ARCLIP_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    eval "file=\${${var}_FILE}"
    if eval "[ -n \"\${${var}+set}\" ]"; then
        echo "error: both $var and ${var}_FILE are set; keep one" >&2
        exit 2
    fi
    if [ ! -r "$file" ]; then
        echo "error: ${var}_FILE: cannot read $file" >&2
        exit 2
    fi
    value=$(cat "$file")  # $(...) drops the trailing newline an editor leaves
    export "$var=$value"
    unset "${var}_FILE"
done
exec "$@"
