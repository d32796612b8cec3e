#!/usr/bin/env bash
# The Scaleway emulator's power hook: boots and halts the instance stand-in, a container of
# plexburst/instance:dev (build-image.sh) that runs Debian's real cloud-init and sshd.
#
#   hook.sh boot SERVER_ID ZONE USERDATA_DIR   at power-on. USERDATA_DIR holds one file per user-data
#       key; the `cloud-init` one becomes the NoCloud user-data (an empty one when it is absent).
#       Returns 0 only once sshd in the instance answers with its SSH banner on
#       127.0.0.1:$PB_INSTANCE_SSH_PORT (cloud-init may still be running then, as on a real
#       instance); otherwise prints the container's logs, removes it and exits non-zero.
#   hook.sh halt SERVER_ID ZONE                at poweroff, terminate and delete: removes the
#       container and its seed directory. Idempotent: halting an unknown server succeeds.
#
# Environment (inherited from the emulator):
#   PB_INSTANCE_SSH_PORT       required for boot: the loopback port sshd listens on (host network)
#   PB_INSTANCE_IMAGE          the image (default plexburst/instance:dev)
#   PB_INSTANCE_BIND_EMULATOR  optional: the host's plex-emulator binary, bound read-only at
#                              /usr/local/bin/plex-emulator
#   PB_INSTANCE_BIND_RCLONE    optional: the host's rclone binary (default: found on PATH or beside
#                              python3's pip scripts), bound read-only at /usr/local/bin/rclone
#   PB_INSTANCE_STATE_DIR      where seed directories live (default /tmp/pb-instances)
#   PB_INSTANCE_BOOT_TIMEOUT   seconds boot waits for sshd (default 120)
#
# Containers are named pb-instance-SERVER_ID and labelled plexburst.instance=1, so a test can assert
# that none is left. Status messages go to stderr; stdout stays empty.
set -euo pipefail

image="${PB_INSTANCE_IMAGE:-plexburst/instance:dev}"
state_dir="${PB_INSTANCE_STATE_DIR:-/tmp/pb-instances}"
boot_timeout="${PB_INSTANCE_BOOT_TIMEOUT:-120}"

say() { echo "instance-hook: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { die "usage: hook.sh boot SERVER_ID ZONE USERDATA_DIR | hook.sh halt SERVER_ID ZONE"; }

[ $# -ge 3 ] || usage
action="$1" server_id="$2" zone="$3"
# The id names a container and a directory: Scaleway's are UUIDs; refuse anything that could escape.
[[ "$server_id" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "invalid SERVER_ID '$server_id'"
name="pb-instance-$server_id"
seed="$state_dir/$server_id"

remove() {
    docker rm -f -v "$name" >/dev/null 2>&1 || true
    rm -rf "$seed"
}

# The first ELF file among the candidates: pyenv puts a shell-script shim for rclone on PATH, and
# a script cannot run inside the instance.
find_rclone() {
    local c r
    if [ -n "${PB_INSTANCE_BIND_RCLONE:-}" ]; then
        echo "$PB_INSTANCE_BIND_RCLONE"
        return
    fi
    for c in $(type -ap rclone) /usr/local/bin/rclone \
        "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/rclone"; do
        r="$(readlink -f "$c" 2>/dev/null)" || continue
        if [ -f "$r" ] && [ "$(head -c 4 "$r" | tail -c 3)" = ELF ]; then
            echo "$r"
            return
        fi
    done
}

# True when something on 127.0.0.1:PORT greets with an SSH banner (bash's /dev/tcp, no extra tool).
# A subshell, so a refused connection cannot end the hook and the descriptor closes with it.
ssh_banner() (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 5 line <&3 || exit 1
    [[ "$line" == SSH-2.0-* ]]
)

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

boot() {
    [ $# -eq 4 ] || usage
    local userdata_dir="$4" port="${PB_INSTANCE_SSH_PORT:-}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "PB_INSTANCE_SSH_PORT must be set to a port number (got '$port')"
    [ -d "$userdata_dir" ] || die "USERDATA_DIR $userdata_dir is not a directory"
    docker image inspect "$image" >/dev/null 2>&1 ||
        die "image $image not found; build it with scripts/instance/build-image.sh"

    # A previous boot of the same server that was never halted: a real poweron starts from the
    # stopped machine, so replace it.
    if docker container inspect "$name" >/dev/null 2>&1; then
        say "replacing the existing container $name"
        remove
    fi
    # With the host's network, a port someone else answers on would look like our sshd.
    ! port_in_use "$port" 2>/dev/null ||
        die "127.0.0.1:$port already accepts connections; PB_INSTANCE_SSH_PORT must be a free port"

    # NoCloud needs both files; an instance without `cloud-init` user data boots with none.
    mkdir -p "$seed"
    if [ -f "$userdata_dir/cloud-init" ]; then
        cp "$userdata_dir/cloud-init" "$seed/user-data"
    else
        : >"$seed/user-data"
    fi
    local hostname="scw-${server_id:0:8}"
    printf 'instance-id: %s\nlocal-hostname: %s\n' "$server_id" "$hostname" >"$seed/meta-data"

    local args=(
        run -d --name "$name"
        --label plexburst.instance=1
        --label "plexburst.instance.server-id=$server_id"
        --label "plexburst.instance.zone=$zone"
        # Host network: the instance's sshd (and anything it serves) is on the host's loopback. The
        # UTS namespace stays private, so cloud-init's set_hostname names the container only.
        --network host --hostname "$hostname"
        # Enough for FUSE (rclone mount) inside; --privileged is refused on these machines.
        --cap-add SYS_ADMIN --device /dev/fuse
        -e "PB_INSTANCE_SSH_PORT=$port"
        -v "$seed:/var/lib/cloud/seed/nocloud:ro"
    )
    # AppArmor's docker-default profile forbids mount(2) even with SYS_ADMIN.
    if docker info --format '{{.SecurityOptions}}' 2>/dev/null | grep -q apparmor; then
        args+=(--security-opt apparmor=unconfined)
    fi
    local rclone
    rclone="$(find_rclone)"
    if [ -n "$rclone" ]; then
        args+=(-v "$rclone:/usr/local/bin/rclone:ro")
    else
        say "warning: no rclone binary found on this host; the instance has no rclone"
    fi
    if [ -n "${PB_INSTANCE_BIND_EMULATOR:-}" ]; then
        [ -x "$PB_INSTANCE_BIND_EMULATOR" ] ||
            die "PB_INSTANCE_BIND_EMULATOR=$PB_INSTANCE_BIND_EMULATOR is not an executable file"
        args+=(-v "$(readlink -f "$PB_INSTANCE_BIND_EMULATOR"):/usr/local/bin/plex-emulator:ro")
    fi

    say "booting $name ($zone) from $image, sshd on 127.0.0.1:$port"
    if ! docker "${args[@]}" "$image" >/dev/null; then
        remove
        die "docker run failed for $name"
    fi

    local deadline=$((SECONDS + boot_timeout))
    while ! ssh_banner "$port" 2>/dev/null; do
        if [ "$(docker container inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
            fail_boot "the container stopped before sshd answered"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail_boot "sshd did not answer on 127.0.0.1:$port within ${boot_timeout}s"
        fi
        sleep 0.5 # poll interval; the loop itself checks sshd, the container and the deadline
    done
    say "$name is up: sshd answers on 127.0.0.1:$port"
}

fail_boot() {
    say "boot of $name failed: $1; the container's last output:"
    docker logs --tail 80 "$name" 2>&1 | sed 's/^/    /' >&2 || true
    remove
    exit 1
}

case "$action" in
boot) boot "$@" ;;
halt)
    [ $# -eq 3 ] || usage
    remove
    say "halted $name"
    ;;
*) usage ;;
esac
