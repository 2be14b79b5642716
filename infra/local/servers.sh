#!/usr/bin/env bash
# infra/local/servers.sh — run the pipeline's backing servers on this machine,
# without Docker: PostgreSQL 15, NATS (JetStream), Redis, etcd and Kafka (KRaft).
#
#   servers.sh up            install what is missing, start what is stopped, wait until ready
#   servers.sh down [--purge] stop everything (and with --purge delete .state/)
#   servers.sh status        one line per server; exit 0 only if all are running
#   servers.sh env           print the exported connection URLs (eval "$(servers.sh env)")
#
# Everything listens on 127.0.0.1 only, on fixed ports chosen far from the
# defaults so a system-wide postgres/redis/... on 5432/6379/... never collides.
# All state (data, configs, logs, pidfiles) lives in <repo>/.state/, which is
# git-ignored. Nothing is downloaded except Debian packages (apt) and the Kafka
# jars (Maven Central, via infra/local/kafka/pom.xml).
#
# Env knobs:
#   CDC_SERVERS_TTL_SECONDS=N  `up` arms a detached watchdog that runs `down`
#                              after N seconds, so servers started by a test run
#                              stop even if the caller dies (see arm_watchdog).
set -Eeuo pipefail

# ---------------------------------------------------------------------------
# Locations. The repo root is derived from this file's path (never from cwd),
# so the script works from any directory and in any clone (/tmp/x, /work/main).
# ---------------------------------------------------------------------------
SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
SCRIPT_DIR="$(dirname "$SCRIPT_PATH")"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
STATE="$REPO_ROOT/.state"
RUN="$STATE/run"                 # our pidfiles (postgres keeps its own postmaster.pid)
ENV_FILE="$STATE/servers.env"

PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=55432
NATS_PORT=54222
NATS_MON_PORT=58222
REDIS_PORT=56379
ETCD_PORT=52379
ETCD_PEER_PORT=52380
KAFKA_PORT=59092
KAFKA_CTRL_PORT=59093

KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_HEAP="${CDC_KAFKA_HEAP:--Xmx512m -Xms256m}"

# Readiness bounds (seconds). Kafka's JVM needs far longer than the others on 2 cores.
READY_TIMEOUT=30
KAFKA_READY_TIMEOUT=90
STOP_TIMEOUT=20
KAFKA_STOP_TIMEOUT=45

SERVERS=(postgres nats redis etcd kafka)

# Servers are started with a clean environment (env -i) so that a caller's
# PGDATA/ETCD_*/JAVA_TOOL_OPTIONS/... cannot leak in: etcd, for one, refuses to
# start when an ETCD_* variable duplicates a command-line flag.
CLEAN_ENV=(env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "LANG=C.UTF-8" "HOME=${HOME:-/root}")

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
log()  { printf '[servers] %s\n' "$*" >&2; }
die()  { printf '[servers] ERROR: %s\n' "$*" >&2; exit 1; }
now()  { date +%s; }
is_root() { [[ $EUID -eq 0 ]]; }

# Last lines of a log, indented, for error messages. The first error-looking
# lines come first: a bad flag makes etcd print its error and then 100 lines of usage.
log_tail() {
  local f="$1" n="${2:-15}"
  if [[ -f "$f" ]]; then
    if grep -qiE 'error|fatal|panic|exception' "$f"; then
      printf '  --- first error lines of %s ---\n' "$f" >&2
      grep -m3 -iE 'error|fatal|panic|exception' "$f" | cut -c1-300 | sed 's/^/  | /' >&2
    fi
    printf '  --- last %s lines of %s ---\n' "$n" "$f" >&2
    tail -n "$n" "$f" | sed 's/^/  | /' >&2
  else
    printf '  (no log file at %s)\n' "$f" >&2
  fi
}

# A pid counts as alive only if /proc has it and it is not a zombie: servers
# are reparented to PID 1 when `up` exits, and a PID 1 that does not reap would
# leave zombies that `kill -0` still reports as alive.
pid_alive() {
  local pid="$1" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/stat" ]] || return 1
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ "$state" != Z && "$state" != X ]]
}

# Pid is alive AND its command line contains $2: protects against pid reuse
# after a reboot or crash leaving a stale pidfile that now names some other process.
pid_is() {
  local pid="$1" pattern="$2"
  local cmdline
  pid_alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$pattern"* ]]
}

port_listening() {
  local port="$1"
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -ltnH "sport = :$port" 2>/dev/null)" ]]
  else
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
  fi
}

# "pid=123 (redis-server)" for whoever listens on a port, if ss can tell.
port_owner() {
  local port="$1" line
  line="$(ss -ltnpH "sport = :$port" 2>/dev/null | head -n1)" || true
  if [[ "$line" =~ \(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
    printf 'pid %s (%s)' "${BASH_REMATCH[2]}" "${BASH_REMATCH[1]}"
  else
    printf 'an unknown process'
  fi
}

# Move the previous run's log aside so readiness checks (Kafka's "started" line)
# only ever see this run's output; keeps exactly one previous log for debugging.
rotate_log() { [[ -f "$1" ]] && mv -f "$1" "$1.prev"; return 0; }

# Start a long-running server detached from the caller: setsid puts it in its
# own session (a test runner killing its process group, or a closing terminal,
# does not take it down), nohup+redirects detach stdio, and 9>&- closes the
# lock fd so the server does not hold our `up`/`down` lock forever.
# In a non-interactive script a background job is not a group leader, so
# setsid execs in place and $! is the server's own pid.
spawn() {
  local pidfile="$1" logfile="$2"; shift 2
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  echo $! >"$pidfile"
}

# shellcheck disable=SC2015  # the || true only turns 'no pidfile' into empty output
read_pid() { [[ -f "$1" ]] && head -n1 "$1" 2>/dev/null | tr -dc '0-9' || true; }

# Wait until `$2...` succeeds, at most $1 seconds. While waiting, fail early if
# the server's process died (checked by the caller-supplied alive function).
wait_until() {
  local timeout="$1" alive_fn="$2"; shift 2
  local deadline=$(( $(now) + timeout ))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! "$alive_fn"; then return 2; fi
    if (( $(now) >= deadline )); then return 1; fi
    sleep 0.5
  done
}

# Serialize up/down between concurrent callers (e.g. two test suites starting
# at once): without it both would see "stopped" and race on the same ports.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  if ! flock -w 300 9; then die "another servers.sh up/down has held $STATE/.lock for 300 s"; fi
}

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

ensure_packages() {
  local want=(postgresql-15 postgresql-client-15 nats-server redis-server redis-tools etcd-server curl iproute2 util-linux procps)
  # Java and Maven are needed only for Kafka; install Debian's if none is on PATH.
  command -v java >/dev/null 2>&1 || want+=(openjdk-17-jre-headless)
  command -v mvn  >/dev/null 2>&1 || want+=(maven)
  local missing=() p
  for p in "${want[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  (( ${#missing[@]} == 0 )) && return 0
  is_root || die "missing Debian packages: ${missing[*]} (run as root, or install them first)"
  log "installing: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed"
  # policy-rc.d exit 101 stops Debian's postinst from starting the packaged
  # services (redis on 6379, a postgres 'main' cluster, ...) where an init system exists.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; created_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || { (( created_policy )) && rm -f $policy; die "apt-get install ${missing[*]} failed"; }
  (( created_policy )) && rm -f $policy
  return 0
}

# ---------------------------------------------------------------------------
# PostgreSQL 15
# ---------------------------------------------------------------------------
# PostgreSQL refuses to run as root, so as root we run it as the `postgres` OS
# user. That user must be able to traverse every directory down to its data
# dir; when the clone lives somewhere it cannot (e.g. under /root, mode 700),
# or the unix socket path would exceed the kernel's 107-byte limit, we keep the
# cluster in /var/tmp instead and leave a symlink at .state/postgres recording
# that choice, so every later run (and `down --purge`) finds the same place.
PG_USER=""        # OS user that runs the server ('' = ourselves)
PG_BASE=""        # real (symlink-resolved) directory holding data/, run/, logs

as_pg() {
  # cd / because postgres may not be allowed to read the caller's cwd.
  if [[ -n "$PG_USER" ]]; then
    (cd / && runuser -u "$PG_USER" -- "${CLEAN_ENV[@]}" "$@")
  else
    (cd / && "${CLEAN_ENV[@]}" "$@")
  fi
}

pg_paths() {
  PG_USER=""
  if is_root; then PG_USER=postgres; fi
  if [[ -L "$STATE/postgres" || -d "$STATE/postgres" ]]; then
    PG_BASE="$(readlink -f "$STATE/postgres")"
  else
    PG_BASE="$STATE/postgres"
  fi
}

pg_prepare_dir() {
  pg_paths
  [[ -n "$PG_USER" ]] || { mkdir -p "$PG_BASE/run"; return 0; }
  id "$PG_USER" >/dev/null 2>&1 || die "OS user '$PG_USER' does not exist (is postgresql-15 installed?)"
  if [[ ! -e "$STATE/postgres" ]]; then
    mkdir -p "$STATE/postgres/run"
    chown "$PG_USER:" "$STATE/postgres" "$STATE/postgres/run"
    local sock="$STATE/postgres/run/.s.PGSQL.$PG_PORT"
    if ! runuser -u "$PG_USER" -- test -w "$STATE/postgres/run" 2>/dev/null || (( ${#sock} > 100 )); then
      local alt
      alt="/var/tmp/cdc-servers-$(printf '%s' "$REPO_ROOT" | md5sum | cut -c1-10)/postgres"
      log "NOTE: user '$PG_USER' cannot reach $STATE (or the socket path is too long);"
      log "      keeping the PostgreSQL cluster in $alt instead (symlinked from .state/postgres)."
      rm -rf "$STATE/postgres"
      mkdir -p "$alt/run"
      chmod 711 "$(dirname "$alt")"
      chown "$PG_USER:" "$alt" "$alt/run"
      ln -s "$alt" "$STATE/postgres"
    fi
    pg_paths
  fi
  runuser -u "$PG_USER" -- test -w "$PG_BASE" 2>/dev/null \
    || die "user '$PG_USER' cannot write $PG_BASE; fix permissions or run 'servers.sh down --purge'"
}

postgres_pid() {
  local pid; pid="$(read_pid "$PG_BASE/data/postmaster.pid")"
  pid_is "$pid" postgres && echo "$pid"
}
postgres_running() { [[ -n "$(postgres_pid)" ]]; }
postgres_log() { echo "$PG_BASE/postgres.log"; }
postgres_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 &&
    [[ "$(psql -X -q "postgresql://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable&connect_timeout=3" -Atc 'SELECT 1' 2>/dev/null)" == 1 ]]
}

postgres_start() {
  pg_prepare_dir
  local data="$PG_BASE/data"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "postgres: initdb $data"
    # C.UTF-8 always exists on Debian; the caller's locale may not be generated.
    as_pg "$PG_BIN/initdb" -D "$data" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 >"$PG_BASE/initdb.log" 2>&1 \
      || { log_tail "$PG_BASE/initdb.log"; die "postgres: initdb failed"; }
    # Keep our settings in their own file, rewritten on every start, so the
    # generated postgresql.conf stays pristine and edits here take effect on restart.
    echo "include_if_exists = 'cdc-local.conf'" >>"$data/postgresql.conf"
  fi
  cat >"$data/cdc-local.conf" <<EOF
# Written by infra/local/servers.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_BASE/run'
wal_level = logical                 # logical decoding for the CDC reader
max_replication_slots = 32          # one slot per test/reader; tests create many
max_wal_senders = 32
wal_sender_timeout = 60s
fsync = on                          # crash tests must see real durability
max_connections = 200
shared_buffers = 256MB
EOF
  # trust for everything on loopback, including physical (`replication`) and
  # logical replication connections (those match the database column, hence `all`).
  cat >"$data/pg_hba.conf" <<EOF
# Written by infra/local/servers.sh on every start.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
local   replication  all                  trust
host    replication  all   127.0.0.1/32   trust
host    replication  all   ::1/128        trust
EOF
  [[ -n "$PG_USER" ]] && chown "$PG_USER:" "$data/cdc-local.conf" "$data/pg_hba.conf"
  # A postmaster.pid naming a dead pid (or one reused by a non-postgres process)
  # would make postgres refuse to start; it is ours and stale, so drop it.
  if [[ -f "$data/postmaster.pid" ]] && ! postgres_running; then rm -f "$data/postmaster.pid"; fi
  rotate_log "$PG_BASE/postgres.log"
  # pg_ctl forks the postmaster into its own session and returns; -w waits for it.
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$PG_BASE/postgres.log" -w -t "$READY_TIMEOUT" -s start 9>&- \
    || { log_tail "$PG_BASE/postgres.log"; die "postgres: pg_ctl start failed (port $PG_PORT)"; }
}

postgres_stop() {
  postgres_running || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$PG_BASE/data" -m fast -w -t 60 -s stop 9>&- && return 0
  # pg_ctl gave up: fall back to signals on the postmaster (SIGINT = fast shutdown).
  local pid; pid="$(postgres_pid || true)"
  if [[ -n "$pid" ]]; then kill_pid postgres "$pid" "$STOP_TIMEOUT" INT; fi
}

# ---------------------------------------------------------------------------
# NATS (JetStream)
# ---------------------------------------------------------------------------
nats_pid()     { local p; p="$(read_pid "$RUN/nats.pid")"; pid_is "$p" nats-server && echo "$p"; }
nats_running() { [[ -n "$(nats_pid)" ]]; }
nats_log()     { echo "$STATE/nats/nats.log"; }
nats_ready()   { curl -fsS --max-time 2 "http://127.0.0.1:$NATS_MON_PORT/healthz?js-enabled-only=true"; }

nats_start() {
  mkdir -p "$STATE/nats" "$RUN"
  # `sync_interval: always` (fsync every JetStream write) only exists from
  # nats-server 2.10; Debian 12 ships 2.9.10, which rejects it ("unknown field"),
  # so we keep 2.9's default (flush to the OS per write, fsync every ~2 min).
  # A host crash can therefore lose acknowledged messages; a process crash cannot.
  # See PITFALLS.md #14 (shared notes): the pipeline must tolerate a replay from the slot.
  cat >"$STATE/nats/nats.conf" <<EOF
# Written by infra/local/servers.sh on every start.
server_name: cdc-local
listen: "127.0.0.1:$NATS_PORT"
http: "127.0.0.1:$NATS_MON_PORT"
jetstream {
  # nats-server appends /jetstream itself: data lands in .state/nats/jetstream.
  store_dir: "$STATE/nats"
}
EOF
  "${CLEAN_ENV[@]}" nats-server -t -c "$STATE/nats/nats.conf" >"$STATE/nats/config-check.log" 2>&1 \
    || { log_tail "$STATE/nats/config-check.log"; die "nats: config rejected"; }
  rotate_log "$STATE/nats/nats.log"
  spawn "$RUN/nats.pid" "$STATE/nats/nats.log" "${CLEAN_ENV[@]}" nats-server -c "$STATE/nats/nats.conf"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------
redis_pid()     { local p; p="$(read_pid "$RUN/redis.pid")"; pid_is "$p" redis-server && echo "$p"; }
redis_running() { [[ -n "$(redis_pid)" ]]; }
redis_log()     { echo "$STATE/redis/redis.log"; }
redis_ready()   { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

redis_start() {
  mkdir -p "$STATE/redis" "$RUN"
  # Not daemonized: spawn() detaches it like the others and records the pid
  # itself, so all servers are tracked the same way.
  cat >"$STATE/redis/redis.conf" <<EOF
# Written by infra/local/servers.sh on every start.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize no
dir "$STATE/redis"
logfile ""
# Dedup keys must survive a restart: AOF with an fsync per write.
appendonly yes
appendfsync always
EOF
  rotate_log "$STATE/redis/redis.log"
  spawn "$RUN/redis.pid" "$STATE/redis/redis.log" "${CLEAN_ENV[@]}" redis-server "$STATE/redis/redis.conf"
}

# ---------------------------------------------------------------------------
# etcd (single member)
# ---------------------------------------------------------------------------
etcd_pid()     { local p; p="$(read_pid "$RUN/etcd.pid")"; pid_is "$p" etcd && echo "$p"; }
etcd_running() { [[ -n "$(etcd_pid)" ]]; }
etcd_log()     { echo "$STATE/etcd/etcd.log"; }
etcd_ready()   { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }

etcd_start() {
  mkdir -p "$STATE/etcd" "$RUN"
  rotate_log "$STATE/etcd/etcd.log"
  # --initial-cluster* only matter on the first start; with an existing data dir
  # etcd ignores them and rejoins its own one-member cluster.
  spawn "$RUN/etcd.pid" "$STATE/etcd/etcd.log" "${CLEAN_ENV[@]}" etcd \
    --name cdc-local \
    --data-dir "$STATE/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "cdc-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-token cdc-local \
    --initial-cluster-state new
}

# ---------------------------------------------------------------------------
# Kafka 3.9.1, KRaft, combined broker+controller, from Maven Central jars
# ---------------------------------------------------------------------------
KAFKA_DIR="$STATE/kafka"
kafka_pid()     { local p; p="$(read_pid "$RUN/kafka.pid")"; pid_is "$p" kafka.Kafka && echo "$p"; }
kafka_running() { [[ -n "$(kafka_pid)" ]]; }
kafka_log()     { echo "$KAFKA_DIR/logs/server.log"; }
kafka_ready() {
  grep -Eq 'Kafka Server started|KafkaRaftServer.*started|\[KafkaServer id=[0-9]+\] started' "$KAFKA_DIR/logs/server.log" 2>/dev/null &&
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT" 2>/dev/null
}

kafka_java() {
  local java="java"; [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]] && java="$JAVA_HOME/bin/java"
  echo "$java"
}

# Jars come from Maven Central through the pom; fetched only when missing or
# when the pom changed (stamp = the pom's checksum), otherwise a no-op.
kafka_libs() {
  local libs="$KAFKA_DIR/libs" stamp want
  want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
  stamp="$(cat "$libs/.pom.sha256" 2>/dev/null || true)"
  if [[ "$stamp" == "$want" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then return 0; fi
  log "kafka: fetching jars from Maven Central into $libs"
  rm -rf "$libs"; mkdir -p "$libs"
  mkdir -p "$KAFKA_DIR/logs"
  mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DoutputDirectory="$libs" >"$KAFKA_DIR/logs/mvn.log" 2>&1 9>&- \
    || { log_tail "$KAFKA_DIR/logs/mvn.log"; die "kafka: 'mvn dependency:copy-dependencies' failed (network to Maven Central?)"; }
  echo "$want" >"$libs/.pom.sha256"
}

kafka_write_config() {
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by infra/local/servers.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CTRL_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CTRL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
# Single node: internal topics cannot have more replicas than brokers.
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
# Tests create consumer groups constantly; do not wait 3 s for more members.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
  # Same layout as Kafka's own config/log4j.properties, trimmed: one bounded
  # rolling file; its "Kafka Server started" line is our readiness signal.
  cat >"$KAFKA_DIR/log4j.properties" <<'EOF'
# Written by infra/local/servers.sh on every start.
log4j.rootLogger=INFO, kafkaAppender
log4j.appender.kafkaAppender=org.apache.log4j.RollingFileAppender
log4j.appender.kafkaAppender.File=${kafka.logs.dir}/server.log
log4j.appender.kafkaAppender.MaxFileSize=50MB
log4j.appender.kafkaAppender.MaxBackupIndex=2
log4j.appender.kafkaAppender.layout=org.apache.log4j.PatternLayout
log4j.appender.kafkaAppender.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
}

kafka_format() {
  # Format exactly once: meta.properties marks a formatted log dir. Re-formatting
  # would need a new cluster id and throw away every topic.
  [[ -f "$KAFKA_DIR/data/meta.properties" ]] && return 0
  local java cid
  java="$(kafka_java)"
  if [[ ! -s "$KAFKA_DIR/cluster.id" ]]; then
    cid="$("${CLEAN_ENV[@]}" "$java" -Xmx128m -cp "$KAFKA_DIR/libs/*" \
            -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
            kafka.tools.StorageTool random-uuid 9>&- | tail -n1 | tr -d '[:space:]')"
    [[ "$cid" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka: StorageTool random-uuid returned '$cid'"
    echo "$cid" >"$KAFKA_DIR/cluster.id"
  fi
  cid="$(cat "$KAFKA_DIR/cluster.id")"
  log "kafka: formatting $KAFKA_DIR/data (cluster id $cid)"
  "${CLEAN_ENV[@]}" "$java" -Xmx256m -cp "$KAFKA_DIR/libs/*" \
    -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    kafka.tools.StorageTool format --config "$KAFKA_DIR/server.properties" --cluster-id "$cid" \
    >"$KAFKA_DIR/logs/format.log" 2>&1 9>&- \
    || { log_tail "$KAFKA_DIR/logs/format.log"; die "kafka: storage format failed"; }
}

kafka_start() {
  mkdir -p "$RUN"
  kafka_libs
  kafka_write_config
  kafka_format
  rotate_log "$KAFKA_DIR/logs/server.log"
  rotate_log "$KAFKA_DIR/logs/kafka.out"
  local java; java="$(kafka_java)"
  # kafka.out catches what log4j does not: JVM errors, an OOM, a bad classpath.
  # shellcheck disable=SC2086  # KAFKA_HEAP is a list of JVM flags
  spawn "$RUN/kafka.pid" "$KAFKA_DIR/logs/kafka.out" "${CLEAN_ENV[@]}" "$java" \
    $KAFKA_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties"
}

# ---------------------------------------------------------------------------
# Generic per-server plumbing
# ---------------------------------------------------------------------------
ports_of() {
  case "$1" in
    postgres) echo "$PG_PORT" ;;
    nats)     echo "$NATS_PORT $NATS_MON_PORT" ;;
    redis)    echo "$REDIS_PORT" ;;
    etcd)     echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    kafka)    echo "$KAFKA_PORT $KAFKA_CTRL_PORT" ;;
  esac
}
timeout_of() { [[ "$1" == kafka ]] && echo "$KAFKA_READY_TIMEOUT" || echo "$READY_TIMEOUT"; }

# SIGTERM (or $4), wait up to $3 s for a clean exit, then SIGKILL.
kill_pid() {
  local name="$1" pid="$2" bound="$3" sig="${4:-TERM}" deadline
  pid_alive "$pid" || return 0
  kill -"$sig" "$pid" 2>/dev/null || true
  deadline=$(( $(now) + bound ))
  while pid_alive "$pid" && (( $(now) < deadline )); do sleep 0.3; done
  if pid_alive "$pid"; then
    log "$name: pid $pid still alive ${bound}s after SIG$sig, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$(( $(now) + 5 ))
    while pid_alive "$pid" && (( $(now) < deadline )); do sleep 0.2; done
  fi
}

stop_server() {
  local s="$1" pid
  case "$s" in
    postgres) postgres_stop ;;
    *)
      pid="$("${s}_pid" || true)"
      if [[ -n "$pid" ]]; then
        local bound="$STOP_TIMEOUT"; [[ "$s" == kafka ]] && bound="$KAFKA_STOP_TIMEOUT"
        kill_pid "$s" "$pid" "$bound"
      fi
      rm -f "$RUN/$s.pid"
      ;;
  esac
}

# A port in use by something that is not our running server is a hard error:
# starting anyway would give confusing "address in use" deaths or, worse,
# tests silently talking to someone else's server.
check_ports_free() {
  local s="$1" p bad=0
  for p in $(ports_of "$s"); do
    if port_listening "$p"; then
      printf '[servers] ERROR: port %s (needed by %s) is already in use by %s, which is not the %s started from %s (no live pidfile). Stop it or free the port.\n' \
        "$p" "$s" "$(port_owner "$p")" "$s" "$STATE" >&2
      bad=1
    fi
  done
  return "$bad"
}

wait_ready() {
  local s="$1" t rc=0
  t="$(timeout_of "$s")"
  wait_until "$t" "${s}_running" "${s}_ready" || rc=$?
  case "$rc" in
    0) return 0 ;;
    2) printf '[servers] ERROR: %s exited during start-up (port %s).\n' "$s" "$(ports_of "$s" | tr ' ' '/')" >&2 ;;
    *) printf '[servers] ERROR: %s not ready after %ss (port %s).\n' "$s" "$t" "$(ports_of "$s" | tr ' ' '/')" >&2 ;;
  esac
  log_tail "$("${s}_log")" 20
  return 1
}

status_line() {
  local s="$1" pid state note=""
  pid="$("${s}_pid" || true)"
  if [[ -n "$pid" ]]; then
    state=running
    local p; for p in $(ports_of "$s"); do port_listening "$p" || note=" (port $p not listening yet)"; done
  else
    state=stopped; pid="-"
  fi
  printf '%-9s %-8s pid %-8s port %s%s\n' "$s" "$state" "$pid" "$(ports_of "$s" | tr ' ' '/')" "$note"
}

# ---------------------------------------------------------------------------
# Watchdog
# ---------------------------------------------------------------------------
# A detached `sleep N; servers.sh down` in its own session. Re-arming never
# shortens an existing deadline (another test run may still be using the
# servers); it only extends it.
watchdog_pid() { local p; p="$(read_pid "$RUN/watchdog.pid")"; pid_alive "$p" && echo "$p"; }

stop_watchdog() {
  local pid; pid="$(watchdog_pid || true)"
  # When the watchdog itself runs `down`, it must not kill its own session.
  if [[ -n "$pid" && "$pid" != "${CDC_SERVERS_WATCHDOG_PID:-}" ]]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/watchdog.pid" "$RUN/watchdog.deadline"
}

arm_watchdog() {
  local ttl="$1" started_any="$2" deadline old
  [[ "$ttl" =~ ^[0-9]+$ && "$ttl" -gt 0 ]] || die "CDC_SERVERS_TTL_SECONDS must be a positive integer, got '$ttl'"
  if [[ "$started_any" == 0 && -z "$(watchdog_pid || true)" ]]; then
    log "CDC_SERVERS_TTL_SECONDS set, but every server was already running without a watchdog: not arming one (it would stop servers someone else started)."
    return 0
  fi
  deadline=$(( $(now) + ttl ))
  old="$(cat "$RUN/watchdog.deadline" 2>/dev/null || echo 0)"
  if [[ -n "$(watchdog_pid || true)" && "$old" =~ ^[0-9]+$ ]] && (( old > deadline )); then deadline=$old; fi
  stop_watchdog
  mkdir -p "$RUN"
  # `$$` inside bash -c is the watchdog's own pid (= its session id, thanks to setsid).
  # shellcheck disable=SC2016  # expanded by the watchdog's shell, not here
  setsid nohup bash -c 'export CDC_SERVERS_WATCHDOG_PID=$$; sleep "$1"; echo "[watchdog] $(date -Is) TTL expired, stopping servers"; exec bash "$2" down' \
    watchdog "$(( deadline - $(now) ))" "$SCRIPT_PATH" >>"$STATE/watchdog.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/watchdog.pid"
  echo "$deadline" >"$RUN/watchdog.deadline"
  log "watchdog armed: servers stop at $(date -d "@$deadline" '+%H:%M:%S') (in $(( deadline - $(now) ))s) unless re-armed"
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
write_env() {
  mkdir -p "$STATE"
  cat >"$ENV_FILE.tmp" <<EOF
# Written by infra/local/servers.sh; source it or: eval "\$(infra/local/servers.sh env)"
export POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export NATS_URL=nats://127.0.0.1:$NATS_PORT
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export ETCD_URL=http://127.0.0.1:$ETCD_PORT
export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
EOF
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_status() {
  local s all=0
  for s in "${SERVERS[@]}"; do
    status_line "$s"
    "${s}_running" || all=3
  done
  local w; w="$(watchdog_pid || true)"
  if [[ -n "$w" ]]; then
    printf '%-9s %-8s pid %-8s stops servers at %s\n' watchdog armed "$w" "$(date -d "@$(cat "$RUN/watchdog.deadline" 2>/dev/null || echo 0)" '+%H:%M:%S')"
  fi
  return "$all"
}

cmd_up() {
  local t0; t0="$(now)"
  take_lock          # before apt too: two concurrent installs would fight over dpkg's lock
  ensure_packages
  mkdir -p "$RUN"

  # Check every port of every stopped server before starting anything, so a
  # conflict fails fast instead of leaving half of the servers started.
  local s to_start=() conflict=0
  for s in "${SERVERS[@]}"; do
    if ! "${s}_running"; then
      check_ports_free "$s" || conflict=1
      to_start+=("$s")
    fi
  done
  (( conflict == 0 )) || exit 1

  # Kafka first: its JVM start-up is the long pole, the others start while it boots.
  local order=()
  for s in kafka postgres nats redis etcd; do
    if [[ " ${to_start[*]} " == *" $s "* ]]; then order+=("$s"); fi
  done
  for s in "${order[@]}"; do
    log "starting $s on port $(ports_of "$s" | tr ' ' '/')"
    "${s}_start"
  done

  local failed=()
  for s in "${SERVERS[@]}"; do wait_ready "$s" || failed+=("$s"); done
  write_env

  if [[ -n "${CDC_SERVERS_TTL_SECONDS:-}" ]]; then
    arm_watchdog "$CDC_SERVERS_TTL_SECONDS" "$(( ${#order[@]} > 0 ? 1 : 0 ))"
  fi

  cmd_status || true
  if (( ${#failed[@]} )); then
    die "not ready: ${failed[*]} (others left running; 'servers.sh down' stops them)"
  fi
  if (( ${#order[@]} )); then
    log "ready in $(( $(now) - t0 ))s; connection URLs in $ENV_FILE"
  else
    log "all servers were already running; nothing started"
  fi
}

cmd_down() {
  local purge=0
  [[ "${1:-}" == --purge ]] && purge=1
  [[ -d "$STATE" ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  take_lock
  stop_watchdog
  local s
  # Reverse start order; each stop is bounded and a no-op when already stopped.
  for s in etcd redis nats postgres kafka; do
    if "${s}_running"; then log "stopping $s"; fi
    stop_server "$s"
  done
  if (( purge )); then
    pg_paths
    # The postgres dir may be a symlink to the /var/tmp fallback: remove the target too.
    if [[ -L "$STATE/postgres" ]]; then rm -rf "$PG_BASE"; rmdir "$(dirname "$PG_BASE")" 2>/dev/null || true; fi
    rm -rf "$STATE"
    log "purged $STATE"
  fi
}

cmd_env() {
  write_env
  cat "$ENV_FILE"
}

usage() {
  sed -n '2,/^set -E/{/^set -E/d;s/^# \{0,1\}//;p}' "$SCRIPT_PATH"
}

main() {
  local cmd="${1:-}"; shift || true
  pg_paths   # sets PG_USER/PG_BASE globals once; see pg_prepare_dir
  case "$cmd" in
    up)     cmd_up "$@" ;;
    down)   cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env)    cmd_env "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
