#!/bin/sh
# Write the broker's password file from the MQTT passwords in the compose .env file.
#
#   mosquitto/make-passwd.sh [ENV_FILE] [PASSWORD_FILE]
#
# ENV_FILE defaults to .env and PASSWORD_FILE to mosquitto/passwd, both next to
# docker-compose.yml. One user per ChargeTwin service (bridge, twin, rules, fleet, api), with the
# password of MQTT_<USER>_PASSWORD, so the broker and the services' CHARGETWIN_MQTT_URL
# always agree. Uses mosquitto_passwd when it is installed, else the one in the
# eclipse-mosquitto:2 image. Run it again after changing a password, then restart the broker
# (or send it SIGHUP).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
env_file=${1:-"$here/../.env"}
out=${2:-"$here/passwd"}
users="bridge twin rules fleet api"

if [ ! -r "$env_file" ]; then
    echo "make-passwd: cannot read $env_file (copy .env.example to .env and set the passwords)" >&2
    exit 2
fi

# The last KEY=value line of the env file, with optional surrounding quotes removed.
value_of() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$env_file" | tail -n 1 \
        | tr -d '\r' | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"
}

out_dir=$(cd "$(dirname "$out")" && pwd)
tmp="$out_dir/.passwd.$$"
trap 'rm -f "$tmp"' EXIT
: > "$tmp"
chmod 0600 "$tmp"

for user in $users; do
    key="MQTT_$(echo "$user" | tr '[:lower:]' '[:upper:]')_PASSWORD"
    password=$(value_of "$key")
    if [ -z "$password" ]; then
        echo "make-passwd: $key is not set in $env_file" >&2
        exit 2
    fi
    if command -v mosquitto_passwd >/dev/null 2>&1; then
        mosquitto_passwd -b "$tmp" "$user" "$password"
    else
        docker run --rm --user "$(id -u):$(id -g)" -v "$out_dir:/work" eclipse-mosquitto:2 \
            mosquitto_passwd -b "/work/$(basename "$tmp")" "$user" "$password"
    fi
done

mv "$tmp" "$out"
trap - EXIT
echo "make-passwd: wrote $out for users: $users"
echo "make-passwd: the broker container reads it as uid 1883; if it cannot, run:"
echo "    sudo chown 1883:1883 $out"
