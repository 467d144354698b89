#!/usr/bin/env bash
# Manual check, outside CI (CI cannot reach GitHub): the REAL AWS IoT Greengrass nucleus lite
# v2.6.0, built from source, provisions with a claimfab lite bundle against the local AWS
# emulator's data plane (scripts/local-aws/local_endpoint.py --data-plane).
#
#   scripts/local-aws/real-lite/check.sh [--lite-src DIR] [--deps-dir DIR] [--keep DIR]
#
#   --lite-src DIR  a checkout of aws-greengrass-lite at v2.6.0 (a warning if it is not);
#                   default: git clone --depth 1 --branch v2.6.0 from GitHub
#   --deps-dir DIR  checkouts of lite's FetchContent deps, one folder per fc_deps.json entry
#                   (core_mqtt, aws_sigv4, gg_sdk, unity), used with
#                   FETCHCONTENT_FULLY_DISCONNECTED=ON; default: CMake downloads them
#   --keep DIR      work in DIR (new or empty) and keep it afterwards: source clone, build,
#                   emulator state, batch, device files, logs/; default: a mktemp -d folder
#                   that is removed at exit
#
# What it owns, all inside the work dir: a lite build (fleet-provisioning, iotcored and
# ggconfigd only), one local endpoint with its data plane, a one-device claimfab batch
# (nucleus = "lite"), the device's files and logs, and every process it starts; those are
# stopped by pid at exit, whatever happens (trap), and the work dir is removed unless --keep.
#
# Needs: root (namespaces and mounts), Debian (apt-get), network to GitHub unless both
# --lite-src and --deps-dir are given, and what the repo's own scripts need (PyPI for .venv,
# crates.io when target/debug/claimfab has to be built).
#
# Changes on the host: the apt packages below when missing, and what ensure-venv.sh,
# ensure-dataplane.sh and cargo leave in the repo (.venv/, target/). Nothing else. The device
# side runs in private mount, network and PID namespaces (unshare): there /etc, /var/lib and
# /run are overlays whose writable layer is a tmpfs, /etc/hosts, /etc/passwd and /etc/group
# are bind-mounted copies (the ATS host -> 127.0.0.1; a ggcore user and group), and
# /etc/greengrass, /var/lib/greengrass and /run/greengrass are bind mounts of empty folders
# of the work dir. Lite's 127.0.0.1:8883 is the namespace's own loopback, bridged to the
# broker through a unix socket in the work dir, so no host port is taken and a host service
# on 8883 does not matter. All of that goes away with the namespace's last process.
#
# Verdict on stdout: a summary and PASS (exit 0) only when every check passes, else FAIL
# (exit 1); exit 1 too when a step fails before the checks; exit 2 on usage or when not root.
set -euo pipefail

readonly lite_tag=v2.6.0
readonly lite_url=https://github.com/aws-greengrass/aws-greengrass-lite
# Lite's build deps (as built by hand on Debian 12), plus the tools this script runs.
readonly apt_deps=(build-essential pkg-config cmake git curl libssl-dev libcurl4-openssl-dev
    uuid-dev libzip-dev libsqlite3-dev libyaml-dev libsystemd-dev libevent-dev liburiparser-dev
    socat iproute2 openssl procps)
readonly fp_timeout=120

self="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/$(basename -- "${BASH_SOURCE[0]}")"
repo="$(cd -- "$(dirname -- "$self")/../../.." && pwd -P)"
lite_src="" deps_dir="" keep="" work=""
pids=() cmake_args=() results=() failures=0

say() { printf 'real-lite: %s\n' "$*" >&2; }
warn() { printf 'real-lite: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'real-lite: %s\n' "$*" >&2
    exit 1
}
usage() {
    local code=${1:-0}
    if ((code)); then
        sed -n '2,15s/^# \{0,1\}//p' "$self" >&2
    else
        sed -n '2,15s/^# \{0,1\}//p' "$self"
    fi
    exit "$code"
}

# Shows the end of a step's log and stops.
die_log() {
    tail -n 25 "$1" | cut -c1-400 >&2
    die "$2 (end of $1 above)"
}

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ $stat != Z* ]]
}

# stop_pid PID: SIGTERM, up to 10 s to go, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_until() {
    local tries=$(($1 * 5)) what=$2
    shift 2
    until "$@"; do
        ((tries-- > 0)) || die "timed out waiting for $what"
        sleep 0.2
    done
}

parse_args() {
    while (($#)); do
        case $1 in
            --lite-src | --deps-dir | --keep)
                (($# >= 2)) || { say "$1 needs a folder"; usage 2; }
                case $1 in
                    --lite-src) lite_src=$2 ;;
                    --deps-dir) deps_dir=$2 ;;
                    --keep) keep=$2 ;;
                esac
                shift 2
                ;;
            -h | --help) usage 0 ;;
            *) say "unknown argument: $1"; usage 2 ;;
        esac
    done
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_pid "${pids[i]}"
    done
    if [[ -n $work && -z $keep ]]; then
        rm -rf -- "$work"
    elif [[ -n $work ]]; then
        say "kept the work dir $work"
    fi
    exit "$rc"
}

make_work_dir() {
    if [[ -n $keep ]]; then
        check_work_path "$(realpath -m -- "$keep")"
        mkdir -p -- "$keep"
        [[ -z "$(ls -A -- "$keep")" ]] || die "--keep $keep is not empty (it would be kept, not cleaned)"
        work="$(cd -- "$keep" && pwd -P)"
    else
        work="$(mktemp -d "${TMPDIR:-/tmp}/claimfab-real-lite.XXXXXX")"
    fi
    check_work_path "$work"
    mkdir -p "$work/logs" "$work/device"
}

check_work_path() {
    # socat addresses and the namespace's overlays set these limits on the path.
    [[ $1 =~ ^/[A-Za-z0-9._/-]+$ ]] || die "work dir $1: use letters, digits, . _ - / only"
    case $1 in
        /etc/* | /var/lib/* | /run/* | /var/run/*) die "work dir $1: not under /etc, /var/lib or /run (overlaid on the device side)" ;;
    esac
}

ensure_apt_deps() {
    local pkg missing=() log="$work/logs/apt.log"
    for pkg in "${apt_deps[@]}"; do
        # shellcheck disable=SC2016 # ${Status} is dpkg-query's field, not a shell variable
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get (Debian) to install them"
    say "installing ${missing[*]} (apt-get)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        die_log "$log" "apt-get install ${missing[*]} failed"
    fi
}

# Sets lite_src to an absolute checkout (cloned from GitHub without --lite-src).
get_lite_source() {
    local tag version
    if [[ -z $lite_src ]]; then
        say "cloning $lite_url at $lite_tag"
        git clone -q --depth 1 --branch "$lite_tag" -c advice.detachedHead=false \
            "$lite_url" "$work/src" >"$work/logs/git-clone.log" 2>&1 ||
            die_log "$work/logs/git-clone.log" "git clone $lite_url failed (no network? use --lite-src)"
        lite_src="$work/src"
    fi
    [[ -f $lite_src/CMakeLists.txt && -f $lite_src/fc_deps.json ]] ||
        die "--lite-src $lite_src is not an aws-greengrass-lite checkout"
    lite_src="$(cd -- "$lite_src" && pwd -P)"
    tag="$(git -c safe.directory="$lite_src" -C "$lite_src" describe --tags 2>/dev/null || true)"
    version="$(tr -d '[:space:]' <"$lite_src/version" 2>/dev/null || true)"
    if [[ -n $tag && $tag != "$lite_tag" ]]; then
        warn "$lite_src is at $tag, not $lite_tag (the version this check was proven with)"
    elif [[ -z $tag && "v$version" != "$lite_tag" ]]; then
        warn "$lite_src/version says '$version', not ${lite_tag#v} (the version this check was proven with)"
    fi
}

# With --deps-dir: FetchContent uses the local checkouts (warning when one is not at the
# revision fc_deps.json pins, or the revision cannot be found in it).
set_deps_args() {
    local pins name rev dir head want
    [[ -n $deps_dir ]] || return 0
    deps_dir="$(cd -- "$deps_dir" && pwd -P)" || die "--deps-dir: no folder $deps_dir"
    pins="$(python3 -c 'import json, sys
for name, dep in json.load(open(sys.argv[1])).items(): print(name, dep["rev"])' "$lite_src/fc_deps.json")" ||
        die "cannot read $lite_src/fc_deps.json"
    cmake_args+=(-D FETCHCONTENT_FULLY_DISCONNECTED=ON)
    while read -r name rev; do
        dir="$deps_dir/$name"
        [[ -d $dir ]] || die "--deps-dir: missing $dir (a checkout of $name at $rev)"
        cmake_args+=(-D "FETCHCONTENT_SOURCE_DIR_${name^^}=$dir")
        head="$(git -c safe.directory="$dir" -C "$dir" rev-parse -q --verify HEAD 2>/dev/null || true)"
        want="$(git -c safe.directory="$dir" -C "$dir" rev-parse -q --verify "$rev^{commit}" 2>/dev/null || true)"
        if [[ -z $want ]]; then
            warn "$name: $rev (pinned by fc_deps.json) not found in $dir; using it at ${head:0:12}"
        elif [[ $head != "$want" ]]; then
            warn "$name: $dir is at ${head:0:12}, fc_deps.json pins $rev (${want:0:12})"
        fi
    done <<<"$pins"
}

# Builds only the three programs the check runs; sets bin and lite_version.
build_lite() {
    local start=$SECONDS
    say "building lite's fleet-provisioning, iotcored, ggconfigd from $lite_src"
    cmake -S "$lite_src" -B "$work/build" -D CMAKE_BUILD_TYPE=RelWithDebInfo "${cmake_args[@]}" \
        >"$work/logs/cmake.log" 2>&1 || die_log "$work/logs/cmake.log" "cmake configure failed"
    cmake --build "$work/build" -j "$(nproc)" --target fleet-provisioning-bin iotcored-bin ggconfigd-bin \
        >"$work/logs/build.log" 2>&1 || die_log "$work/logs/build.log" "lite build failed"
    bin="$work/build/bin"
    # stdout only: its log lines (stderr) can land in the middle of the version's line.
    lite_version="$("$bin/fleet-provisioning" --version 2>/dev/null | head -n1 || true)"
    say "built lite $lite_version in $((SECONDS - start)) s"
}

ensure_claimfab() {
    claimfab="$repo/target/debug/claimfab"
    [[ -x $claimfab ]] && return 0
    say "building claimfab (cargo build)"
    (cd "$repo" && cargo build --locked --quiet) >"$work/logs/cargo.log" 2>&1 ||
        die_log "$work/logs/cargo.log" "cargo build failed"
}

# Starts the local endpoint with its data plane; sets py, the AWS_* variables and dp_*.
start_endpoint() {
    local pid url i info
    bash "$repo/scripts/local-aws/ensure-venv.sh"
    bash "$repo/scripts/local-aws/dataplane/ensure-dataplane.sh"
    py="$repo/.venv/bin/python"
    "$py" "$repo/scripts/local-aws/local_endpoint.py" --state-dir "$work/ep" --data-plane \
        --exit-with-parent >"$work/logs/endpoint.out" 2>"$work/logs/endpoint.err" &
    pid=$!
    pids+=("$pid")
    for ((i = 0; i < 300; i++)); do
        grep -q '^ready ' "$work/logs/endpoint.out" && break
        alive "$pid" || die_log "$work/logs/endpoint.err" "the local endpoint stopped"
        sleep 0.2
    done
    url="$(sed -n 's/^ready //p' "$work/logs/endpoint.out")"
    [[ -n $url ]] || die_log "$work/logs/endpoint.err" "the local endpoint did not start in 60 s"
    # The local account only: no profile, config or credentials file of the maintainer's.
    export AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing \
        AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
        AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent
    unset AWS_PROFILE AWS_SESSION_TOKEN AWS_DEFAULT_PROFILE
    info="$("$py" -c 'import json, sys
d = json.load(open(sys.argv[1]))["data_plane"]
print("\n".join(str(d[k]) for k in ("port", "server_name", "ca_cert", "log", "service_client_id")))' \
        "$work/ep/endpoint.json")"
    mapfile -t dp <<<"$info"
    dp_port=${dp[0]} dp_host=${dp[1]} dp_ca=${dp[2]} dp_log=${dp[3]} dp_service=${dp[4]}
    say "local endpoint $url; broker 127.0.0.1:$dp_port serving $dp_host"
}

# claimfab setup + a one-device lite batch; sets bundle.
make_bundle() {
    local station="$work/station.toml" zips
    cat >"$station" <<'EOF'
[provisioning]
thing_group = "LineOne"
thing_name_pattern = "gg-{serial}"

[greengrass]
nucleus = "lite"

[limits]
create_certificate_from_csr_per_second = 200
attach_policy_per_second = 200
EOF
    "$claimfab" setup --station "$station" >"$work/logs/claimfab-setup.log" 2>&1 ||
        die_log "$work/logs/claimfab-setup.log" "claimfab setup failed"
    "$claimfab" batch --station "$station" --out "$work/batch" --count 1 \
        >"$work/logs/claimfab-batch.log" 2>&1 || die_log "$work/logs/claimfab-batch.log" "claimfab batch failed"
    zips=("$work"/batch/bundles/*.zip)
    [[ ${#zips[@]} -eq 1 && -f ${zips[0]} ]] || die "expected one bundle in $work/batch/bundles"
    bundle=${zips[0]}
    say "bundle $bundle"
}

# Host end of the bridge to the broker: a unix socket in the work dir (the device's
# namespace has its own network, so it reaches the broker only through this socket).
start_bridge() {
    socat "UNIX-LISTEN:$work/broker.sock,fork" "TCP:127.0.0.1:$dp_port" \
        2>"$work/logs/socat-host.log" &
    pids+=("$!")
    wait_until 10 "the bridge's socket" test -S "$work/broker.sock"
}

run_device() {
    local pid
    say "device side: lite's fleet-provisioning in private mount, network and PID namespaces"
    unshare --mount --propagation private --net --pid --fork --kill-child --mount-proc \
        "$BASH" "$self" --inside "$work" "$dp_host" "$bundle" "$dp_ca" &
    pid=$!
    pids+=("$pid")
    wait "$pid" || die "the device side failed (above; logs in $work/logs)"
}

# ---- inside the namespaces (check.sh --inside WORK ATS_HOST BUNDLE TEST_CA) ----

inside_main() {
    work=$1 ats_host=$2 bundle=$3 test_ca=$4
    bin="$work/build/bin"
    trap inside_cleanup EXIT
    inside_mounts
    inside_install_bundle
    inside_start_services
    inside_provision
}

inside_cleanup() {
    local rc=$? i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_pid "${pids[i]}"
    done
    exit "$rc"
}

# The host's /etc, /var/lib and /run as overlays (writes land in a tmpfs that dies with the
# namespace); copies of hosts, passwd, group; empty greengrass folders from the work dir.
inside_mounts() {
    local ns="$work/ns" dev="$work/device" p n gid
    mkdir -p "$ns" "$dev/etc" "$dev/var-lib" "$dev/run" "$dev/state"
    mount -t tmpfs -o mode=0700 claimfab-real-lite "$ns"
    cp /etc/hosts /etc/passwd /etc/group "$ns/"
    printf '127.0.0.1 %s\n' "$ats_host" >>"$ns/hosts"
    # fleet-provisioning chowns what it writes to ggcore:ggcore (the bundle's posixUser).
    gid="$(awk -F: '$1 == "ggcore" { print $3 }' "$ns/group")"
    if [[ -z $gid ]]; then
        gid="$(free_id "$ns")"
        printf 'ggcore:x:%s:\n' "$gid" >>"$ns/group"
    fi
    grep -q '^ggcore:' "$ns/passwd" ||
        printf 'ggcore:x:%s:%s::/nonexistent:/usr/sbin/nologin\n' "$(free_id "$ns")" "$gid" >>"$ns/passwd"
    for p in etc var/lib run; do
        n=${p//\//-}
        mkdir -p "$ns/$n.up" "$ns/$n.work"
        mount -t overlay overlay -o "lowerdir=/$p,upperdir=$ns/$n.up,workdir=$ns/$n.work" "/$p" ||
            die "cannot overlay /$p (needs overlayfs)"
    done
    for p in hosts passwd group; do
        mount --bind "$ns/$p" "/etc/$p"
    done
    mkdir -p /etc/greengrass /var/lib/greengrass /run/greengrass
    mount --bind "$dev/etc" /etc/greengrass
    mount --bind "$dev/var-lib" /var/lib/greengrass
    mount --bind "$dev/run" /run/greengrass
}

# free_id DIR: an id used by no user or group in DIR/passwd and DIR/group.
free_id() {
    local id=61000
    while awk -F: -v id="$id" '$3 == id { found = 1 } END { exit !found }' "$1/passwd" "$1/group"; do
        id=$((id + 1))
    done
    printf '%s\n' "$id"
}

inside_install_bundle() {
    local root_ca
    python3 - "$bundle" <<'PY' || die "cannot install the bundle's files"
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        name = info.filename
        if info.is_dir():
            continue
        if not name.startswith(("etc/greengrass/", "var/lib/greengrass/")) or ".." in name.split("/"):
            sys.exit(f"unexpected path in the bundle: {name}")
        dest = "/" + name
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as out:
            out.write(z.read(info))
        os.chmod(dest, (info.external_attr >> 16) & 0o777 or 0o600)
PY
    root_ca="$(sed -n 's/^ *rootCaPath: *//p' /etc/greengrass/config.d/*.yaml | tr -d "\"'" | head -n1)"
    [[ $root_ca == /var/lib/greengrass/* && -f $root_ca ]] || die "no rootCaPath file from the bundle ($root_ca)"
    # The bundle carries Amazon Root CA 1, right for AWS IoT; the emulator's broker presents a
    # certificate signed by the emulator's own test CA, so the device trusts that one instead.
    cp "$test_ca" "$root_ca"
}

inside_start_services() {
    ip link set lo up
    # Lite always dials port 8883; here it is this namespace's loopback, bridged to the broker.
    socat TCP-LISTEN:8883,bind=127.0.0.1,reuseaddr,fork "UNIX-CONNECT:$work/broker.sock" \
        2>"$work/logs/socat-device.log" &
    pids+=("$!")
    wait_until 10 "the forwarder on 127.0.0.1:8883" listening 8883
    # ggconfigd keeps ./config.db in its cwd and serves /run/greengrass/gg_config.
    (cd "$work/device/state" && exec "$bin/ggconfigd") >"$work/logs/ggconfigd.log" 2>&1 &
    pids+=("$!")
    wait_until 10 "ggconfigd's socket" test -S /run/greengrass/gg_config
}

listening() {
    [[ -n "$(ss -Hltn "sport = :$1")" ]]
}

inside_provision() {
    local rc=0
    (cd "$work/device/state" && exec timeout "$fp_timeout" "$bin/fleet-provisioning") \
        >"$work/logs/fleet-provisioning.log" 2>&1 || rc=$?
    printf '%s\n' "$rc" >"$work/device/fleet-provisioning.rc"
}

# ---- checks (back on the host, while the endpoint still runs) ----

pass() { results+=("ok    $*"); }
fail() {
    results+=("FAIL  $*")
    failures=$((failures + 1))
}

check_provisioning() {
    local rc
    rc="$(cat "$work/device/fleet-provisioning.rc" 2>/dev/null || echo none)"
    if [[ $rc == 0 ]]; then
        pass "fleet-provisioning exited 0"
    else
        fail "fleet-provisioning exited $rc$([[ $rc != 124 ]] || echo ": killed after $fp_timeout s")"
    fi
    if grep -q 'Your device is now provisioned' "$work/logs/fleet-provisioning.log"; then
        pass "its log says: Your device is now provisioned"
    else
        fail "its log does not say: Your device is now provisioned"
    fi
}

check_device_files() {
    local creds="$work/device/var-lib/credentials" cert_pub key_pub
    thing="$(sed -n 's/^ *ThingName: *//p' "$work/device/etc/config.d/"*.yaml 2>/dev/null | tr -d "\"'" | head -n1)"
    [[ -n $thing ]] || fail "no templateParams ThingName in the bundle's config"
    if [[ ! -s $creds/certificate.pem ]]; then
        fail "no /var/lib/greengrass/credentials/certificate.pem"
        return 0
    fi
    pass "/var/lib/greengrass/credentials/certificate.pem written"
    cert_pub="$(openssl x509 -in "$creds/certificate.pem" -noout -pubkey 2>/dev/null || true)"
    key_pub="$(openssl pkey -in "$creds/priv_key" -pubout 2>/dev/null || true)"
    if [[ -n $cert_pub && $cert_pub == "$key_pub" ]]; then
        pass "its key matches credentials/priv_key (openssl)"
    else
        fail "its key does not match credentials/priv_key (openssl)"
    fi
}

# Asks the emulator (boto3) for its things and the certificate attached to the bundle's thing.
check_emulator() {
    local out things cert_status
    out="$("$py" - "$thing" "$work/cloud-cert.pem" <<'PY' 2>"$work/logs/emulator-check.err" || true
import os, sys, boto3
thing, pem_out = sys.argv[1], sys.argv[2]
iot = boto3.client("iot", region_name=os.environ["AWS_REGION"])
things = sorted(t["thingName"] for t in iot.list_things()["things"])
print("things=" + ",".join(things))
if thing in things:
    principals = iot.list_thing_principals(thingName=thing)["principals"]
    print("principals=%d" % len(principals))
    if len(principals) == 1 and ":cert/" in principals[0]:
        cert_id = principals[0].rsplit("/", 1)[1]
        desc = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
        print("cert_id=" + cert_id)
        print("cert_status=" + desc["status"])
        with open(pem_out, "w") as f:
            f.write(desc["certificatePem"])
PY
    )"
    things="$(sed -n 's/^things=//p' <<<"$out")"
    cert_id="$(sed -n 's/^cert_id=//p' <<<"$out")"
    cert_status="$(sed -n 's/^cert_status=//p' <<<"$out")"
    if [[ -n $thing && $things == "$thing" ]]; then
        pass "the emulator's one thing is the bundle's $thing"
    else
        fail "the emulator's things are '$things', want only the bundle's '$thing'"
    fi
    if [[ -n $cert_id && $cert_status == ACTIVE ]]; then
        pass "the thing's one principal is an ACTIVE certificate"
    else
        fail "the thing has no single ACTIVE certificate ($(sed -n 's/^principals=//p' <<<"$out") principals, status '$cert_status')"
    fi
    if [[ -f $work/cloud-cert.pem ]] && cmp -s "$work/cloud-cert.pem" "$work/device/var-lib/credentials/certificate.pem"; then
        pass "the device's certificate.pem is byte-identical to the emulator's"
    else
        fail "the device's certificate.pem differs from the emulator's certificatePem"
    fi
}

# count_packets KIND ID: broker log lines "Received KIND from ID".
count_packets() {
    awk -v kind="$1" -v id="$2" '$2 == "Received" && $3 == kind && $4 == "from" && $5 == id { n++ }
        END { print n + 0 }' "$dp_log"
}

check_broker() {
    local ids n
    ids="$(sed -n 's/.* New client connected from [^ ]* as \([^ ]*\) (p5,.*/\1/p' "$dp_log" |
        grep -vxF -- "$dp_service" | sort -u || true)"
    n="$(grep -c . <<<"$ids" || true)"
    if [[ $n != 1 ]]; then
        fail "want one MQTT 5 device client in the broker log besides $dp_service, found $n"
        client_id="" subscribes="?" publishes="?"
        return 0
    fi
    client_id=$ids
    subscribes="$(count_packets SUBSCRIBE "$client_id")"
    publishes="$(count_packets PUBLISH "$client_id")"
    if [[ $subscribes == 0 ]]; then pass "broker: 0 SUBSCRIBE from lite"; else fail "broker: $subscribes SUBSCRIBE from lite, want 0"; fi
    if [[ $publishes == 2 ]]; then pass "broker: 2 PUBLISH from lite"; else fail "broker: $publishes PUBLISH from lite, want 2"; fi
}

report() {
    local line
    printf 'Greengrass nucleus lite: %s (fleet-provisioning --version)\n' "$lite_version"
    printf 'thing:                   %s\n' "${thing:-?}"
    printf 'certificate id:          %s\n' "${cert_id:-?}"
    printf "lite's MQTT client id:   %s\n" "${client_id:-?}"
    printf 'packets from lite:       SUBSCRIBE %s (want 0), PUBLISH %s (want 2)\n' "$subscribes" "$publishes"
    for line in "${results[@]}"; do
        printf '  %s\n' "$line"
    done
    if ((failures)); then
        say "end of the fleet-provisioning log:"
        tail -n 15 "$work/logs/fleet-provisioning.log" 2>/dev/null | cut -c1-300 >&2 || true
        [[ -n $keep ]] || say "(run with --keep DIR to keep every log)"
        printf 'FAIL (%d check(s) failed; %d s)\n' "$failures" "$SECONDS"
        return 1
    fi
    printf 'PASS (%d s)\n' "$SECONDS"
}

main() {
    parse_args "$@"
    if ((EUID != 0)); then
        say "needs root (private mount/network/PID namespaces, apt-get)"
        exit 2
    fi
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    make_work_dir
    ensure_apt_deps
    get_lite_source
    set_deps_args
    build_lite
    ensure_claimfab
    start_endpoint
    make_bundle
    start_bridge
    run_device
    thing="" cert_id="" client_id="" subscribes="?" publishes="?"
    check_provisioning
    check_device_files
    check_emulator
    check_broker
    report
}

if [[ ${1:-} == --inside ]]; then
    shift
    inside_main "$@"
else
    main "$@"
fi
