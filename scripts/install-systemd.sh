#!/usr/bin/env bash
# Install the convlog broker and recorder (and, with --db, the sync) as systemd services.
#
#   scripts/install-systemd.sh [--user] [--prefix-bin PATH] [--dir DATA_DIR]
#                              [--xsub ENDPOINT] [--xpub ENDPOINT] [--db URL] [--dry-run] [--no-enable]
#
# Renders systemd/convlog-broker.service and systemd/convlog-recorder.service (the
# @...@ placeholders), writes them to /etc/systemd/system (or, with --user, to
# ${XDG_CONFIG_HOME:-~/.config}/systemd/user), writes a default recorder config if there
# is none, creates the `convlog` system user (sysusers.d) for system units, then runs
# `systemctl [--user] daemon-reload` and `enable --now` (restarting units that were
# already running so they pick up the new settings).
#
# With --db URL it also renders systemd/convlog-sync.service (`convlog sync --follow`
# into PostgreSQL) and writes the URL to an environment file, mode 0600 (owned by the
# convlog user for system units), /etc/convlog/sync.env or, with --user,
# ${XDG_CONFIG_HOME:-~/.config}/convlog/sync.env, so that the URL (and its password) is
# neither in the unit nor in the process list.
#
# --dry-run changes nothing: on stdout, each file it would write as a "==> PATH <=="
# line followed by the content; on stderr, the commands it would run.
#
# Exit status: 0 done, 1 failure (convlog not found, not root, systemctl failed),
# 2 usage error (one line on stderr).

set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

prog=${0##*/}
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
templates=$(cd -- "$here/../systemd" && pwd)

usage() {
    cat <<EOF
usage: $prog [--user] [--prefix-bin PATH] [--dir DATA_DIR] [--xsub ENDPOINT] [--xpub ENDPOINT] [--db URL] [--dry-run] [--no-enable]

  --user             install user units (~/.config/systemd/user) instead of system units
  --prefix-bin PATH  the convlog executable (default: \`command -v convlog\`)
  --dir DATA_DIR     the recorder's log directory, absolute
                     (default /var/lib/convlog, or %S/convlog = ~/.local/state/convlog with --user)
  --xsub ENDPOINT    broker endpoint publishers connect to (default tcp://127.0.0.1:5555)
  --xpub ENDPOINT    broker endpoint subscribers connect to (default tcp://127.0.0.1:5556)
  --db URL           also install convlog-sync.service, following the log into this PostgreSQL
                     database (postgresql://USER:PASSWORD@HOST/DBNAME), kept in a 0600 file
                     (/etc/convlog/sync.env, or ~/.config/convlog/sync.env with --user)
  --dry-run          print the files it would write (stdout) and commands it would run (stderr)
  --no-enable        write the files and reload systemd, but do not enable or start the units
EOF
}

usage_error() {
    printf '%s: %s (see --help)\n' "$prog" "$1" >&2
    exit 2
}

die() {
    printf '%s: %s\n' "$prog" "$1" >&2
    exit 1
}

note() {
    printf '%s: %s\n' "$prog" "$1" >&2
}

user_mode=0
dry_run=0
enable=1
convlog_bin=""
data_dir=""
xsub="tcp://127.0.0.1:5555"
xpub="tcp://127.0.0.1:5556"
db=""

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --user) user_mode=1 ;;
        --dry-run) dry_run=1 ;;
        --no-enable) enable=0 ;;
        --prefix-bin | --dir | --xsub | --xpub | --db)
            case ${2:-} in
                "" | -*) usage_error "$1 needs a value" ;;
            esac
            case $1 in
                --prefix-bin) convlog_bin=$2 ;;
                --dir) data_dir=$2 ;;
                --xsub) xsub=$2 ;;
                --xpub) xpub=$2 ;;
                --db) db=$2 ;;
            esac
            shift ;;
        --prefix-bin=* | --dir=* | --xsub=* | --xpub=* | --db=*)
            value=${1#*=}
            [ -n "$value" ] || usage_error "${1%%=*} needs a value"
            case $1 in
                --prefix-bin=*) convlog_bin=$value ;;
                --dir=*) data_dir=$value ;;
                --xsub=*) xsub=$value ;;
                --xpub=*) xpub=$value ;;
                --db=*) db=$value ;;
            esac ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

# A value that goes into a unit file: one word (ExecStart= splits on spaces, quoting
# would be needed), no quotes or backslashes (escapes), no control characters.
check_word() { # NAME VALUE
    case $2 in
        *[[:space:]\"\'\\]* | *[[:cntrl:]]*) usage_error "$1 must not contain spaces, quotes or backslashes: $2" ;;
    esac
}

check_endpoint() { # NAME VALUE
    check_word "$1" "$2"
    [[ $2 =~ ^(tcp|ipc|ws|wss|pgm|epgm)://.+ ]] || usage_error "$1 is not a ZeroMQ endpoint (transport://address): $2"
}

check_endpoint --xsub "$xsub"
check_endpoint --xpub "$xpub"
if [ -n "$data_dir" ]; then
    check_word --dir "$data_dir"
    case $data_dir in
        /*) ;;
        *) usage_error "--dir must be an absolute path: $data_dir" ;;
    esac
    data_dir=${data_dir%/}
    [ -n "$data_dir" ] || usage_error "--dir must not be /"
fi

# The database URL goes into the environment file as one single-quoted value (systemd
# and sh both take it literally): no single quotes, no control characters (newlines).
if [ -n "$db" ]; then
    case $db in
        *\'* | *[[:cntrl:]]*) usage_error "--db must not contain single quotes or control characters" ;;
    esac
fi

# The convlog executable, absolute. A pyenv shim is a shell script that needs pyenv and
# the invoking user's environment: use the real entry point behind it.
if [ -z "$convlog_bin" ]; then
    convlog_bin=$(command -v convlog) || die "convlog is not on PATH; install it (pip install convlog) or pass --prefix-bin"
    case $convlog_bin in
        */.pyenv/shims/*)
            if command -v pyenv >/dev/null 2>&1; then
                convlog_bin=$(pyenv which convlog) || die "pyenv cannot resolve the convlog shim; pass --prefix-bin"
            fi ;;
    esac
fi
check_word --prefix-bin "$convlog_bin"
case $convlog_bin in
    /*) ;;
    *) usage_error "--prefix-bin must be an absolute path: $convlog_bin" ;;
esac
if [ ! -f "$convlog_bin" ] || [ ! -x "$convlog_bin" ]; then die "$convlog_bin is not an executable file"; fi

# Unit files expand %-specifiers: a literal % is written %%.
unit_escape() { printf '%s' "${1//%/%%}"; }

if [ "$user_mode" = 1 ]; then
    config_home=${XDG_CONFIG_HOME:-$HOME/.config}
    unit_dir=$config_home/systemd/user
    config_file=$config_home/convlog/recorder.toml
    config_in_unit=%E/convlog/recorder.toml         # %E = $XDG_CONFIG_HOME
    sync_env_file=$config_home/convlog/sync.env
    sync_env_in_unit=%E/convlog/sync.env
    if [ -z "$data_dir" ]; then
        data_in_unit=%S/convlog                      # %S = the StateDirectory= root
        data_dir_to_create=""                        # StateDirectory=convlog creates it
    else
        data_in_unit=$(unit_escape "$data_dir")
        data_dir_to_create=$data_dir
    fi
    wanted_by=default.target
    systemctl=(systemctl --user)
else
    unit_dir=/etc/systemd/system
    config_file=/etc/convlog/recorder.toml
    config_in_unit=$config_file                     # no % in it: needs no escaping
    sync_env_file=/etc/convlog/sync.env
    sync_env_in_unit=$sync_env_file
    data_dir=${data_dir:-/var/lib/convlog}
    data_in_unit=$(unit_escape "$data_dir")
    case $data_dir/ in
        /var/lib/convlog/*) data_dir_to_create="" ;;  # StateDirectory=convlog creates it
        *) data_dir_to_create=$data_dir ;;
    esac
    wanted_by=multi-user.target
    systemctl=(systemctl)
fi

# The recorder connects to the broker's XPUB endpoint; a wildcard bind address is not
# something to connect to, so use loopback for it.
sub=$xpub
case $sub in
    tcp://\*:* | tcp://0.0.0.0:*) sub=tcp://127.0.0.1:${sub##*:} ;;
    tcp://\[::\]:*) sub="tcp://[::1]:${sub##*:}" ;;
esac

# ProtectHome=yes hides /home, /root and /run/user; relax it to read-only when the
# executable or the data directory lives there (system units only).
protect_home=yes
for path in "$convlog_bin" "$data_dir"; do
    case $path in
        /home/* | /root/* | /run/user/*)
            protect_home=read-only
            [ "$user_mode" = 1 ] || note "warning: $path is in a home directory; the service runs as user convlog and must be able to reach it (install convlog outside /home and /root, e.g. python3 -m venv /opt/convlog)" ;;
    esac
done

render() { # TEMPLATE
    local text line out="" skip=0
    text=$(<"$1")
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            "# BEGIN system-only") [ "$user_mode" = 1 ] && skip=1; continue ;;
            "# END system-only") skip=0; continue ;;
        esac
        [ "$skip" = 1 ] && continue
        out+=$line$'\n'
    done <<<"$text"
    out=${out//@CONVLOG@/"$(unit_escape "$convlog_bin")"}
    out=${out//@CONFIG@/"$config_in_unit"}
    out=${out//@SYNC_ENV@/"$sync_env_in_unit"}
    out=${out//@DATA_DIR@/"$data_in_unit"}
    out=${out//@SUB@/"$(unit_escape "$sub")"}
    out=${out//@XSUB@/"$(unit_escape "$xsub")"}
    out=${out//@XPUB@/"$(unit_escape "$xpub")"}
    out=${out//@PROTECT_HOME@/"$protect_home"}
    out=${out//@WANTED_BY@/"$wanted_by"}
    if [[ $out =~ @[A-Z_]+@ ]]; then
        die "$1: placeholder ${BASH_REMATCH[0]} left unfilled"
    fi
    printf '%s' "$out"
}

default_config() {
    cat <<EOF
# convlog recorder configuration (keys and defaults: docs/configuration.md).
# convlog-recorder.service passes --dir and --sub on its command line, which override
# [recorder].dir and [recorder].sub here:
#   --dir $data_dir_shown
#   --sub $sub

[recorder]
fsync = "interval"             # always | interval | never
fsync_interval_ms = 50
# pull = "tcp://127.0.0.1:5557"  # also bind a PULL socket for agents that PUSH copies
checkpoint_interval_s = 300
checkpoint_keep = 12
EOF
}
data_dir_shown=${data_dir:-${XDG_STATE_HOME:-$HOME/.local/state}/convlog}

# The environment file of convlog-sync.service: the URL (and its password) stays out of
# the unit and the process list.
sync_env() {
    printf '%s\n' '# convlog-sync.service: the database `convlog sync` follows the log into' \
        '# (written by install-systemd.sh --db; mode 0600: the URL may hold a password).' \
        "CONVLOG_DB='$db'"
}

sysusers_file=/etc/sysusers.d/convlog.conf
sysusers() {
    printf '%s\n' '# The convlog recorder service user (convlog-recorder.service: User=convlog).' \
        'u convlog - "convlog recorder" /var/lib/convlog'
}

files=()    # pairs: path, content
add_file() { files+=("$1" "$2"); }

add_file "$unit_dir/convlog-broker.service" "$(render "$templates/convlog-broker.service")"
add_file "$unit_dir/convlog-recorder.service" "$(render "$templates/convlog-recorder.service")"
if [ -n "$db" ]; then
    add_file "$unit_dir/convlog-sync.service" "$(render "$templates/convlog-sync.service")"
fi
if [ -e "$config_file" ]; then
    note "keeping the existing $config_file"
else
    add_file "$config_file" "$(default_config)"
fi
if [ "$user_mode" = 0 ] && ! getent passwd convlog >/dev/null 2>&1; then
    add_file "$sysusers_file" "$(sysusers)"
fi

units=(convlog-broker.service convlog-recorder.service)
if [ -n "$db" ]; then units+=(convlog-sync.service); fi

run() { # COMMAND...
    if [ "$dry_run" = 1 ]; then
        note "would run: $*"
    else
        "$@"
    fi
}

if [ "$dry_run" = 0 ] && [ "$user_mode" = 0 ]; then
    [ "$(id -u)" = 0 ] || die "installing system units needs root (run with sudo, or use --user)"
    # Checked before writing anything, so a machine without systemd is left untouched.
    [ -d /run/systemd/system ] || die "systemd is not running on this machine (no /run/systemd/system)"
elif [ "$dry_run" = 0 ]; then
    [ -S "${XDG_RUNTIME_DIR:-/nonexistent}/systemd/private" ] ||
        die "no systemd user manager for $(id -un) (log in, or: loginctl enable-linger $(id -un))"
fi

for ((i = 0; i < ${#files[@]}; i += 2)); do
    path=${files[i]}
    if [ "$dry_run" = 1 ]; then
        printf '==> %s <==\n%s\n' "$path" "${files[i + 1]}"
        note "would write $path"
    else
        mkdir -p -- "$(dirname -- "$path")"
        printf '%s\n' "${files[i + 1]}" >"$path.tmp.$$"
        chmod 0644 "$path.tmp.$$"
        mv -f -- "$path.tmp.$$" "$path"
        note "wrote $path"
    fi
done

if [ "$user_mode" = 0 ] && ! getent passwd convlog >/dev/null 2>&1; then
    run systemd-sysusers "$sysusers_file"
fi
# Written after the service user exists (it owns it for system units), never readable
# by anyone else, not even for a moment (umask 077 before the file is created).
if [ -n "$db" ]; then
    if [ "$dry_run" = 1 ]; then
        printf '==> %s <==\n%s\n' "$sync_env_file" "$(sync_env)"
        if [ "$user_mode" = 1 ]; then
            note "would write $sync_env_file (mode 0600)"
        else
            note "would write $sync_env_file (mode 0600, owner convlog:convlog)"
        fi
    else
        mkdir -p -- "$(dirname -- "$sync_env_file")"
        (umask 077 && sync_env >"$sync_env_file.tmp.$$")
        chmod 0600 "$sync_env_file.tmp.$$"
        if [ "$user_mode" = 0 ]; then chown convlog:convlog "$sync_env_file.tmp.$$"; fi
        mv -f -- "$sync_env_file.tmp.$$" "$sync_env_file"
        note "wrote $sync_env_file (mode 0600)"
    fi
fi
if [ -n "$data_dir_to_create" ]; then
    if [ "$user_mode" = 1 ]; then
        run mkdir -p -- "$data_dir_to_create"
    else
        run install -d -m 0750 -o convlog -g convlog -- "$data_dir_to_create"
    fi
fi

run "${systemctl[@]}" daemon-reload
if [ "$enable" = 1 ]; then
    active=()
    for unit in "${units[@]}"; do
        if [ "$dry_run" = 0 ] && "${systemctl[@]}" is-active --quiet "$unit"; then
            active+=("$unit")
        fi
    done
    run "${systemctl[@]}" enable --now "${units[@]}"
    # Units that were already running: restart them so the new unit files take effect.
    if [ ${#active[@]} -gt 0 ]; then
        run "${systemctl[@]}" try-restart "${active[@]}"
    fi
    if [ "$user_mode" = 1 ]; then
        note "to keep the user units running when you are logged out: loginctl enable-linger $(id -un)"
    fi
fi
if [ "$dry_run" = 0 ]; then
    note "done; check with: ${systemctl[*]} status ${units[*]}"
fi
