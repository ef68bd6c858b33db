#!/usr/bin/env bash
# A single-node SLURM cluster (munge + MariaDB + slurmdbd + slurmctld + slurmd) for tests and benchmarks.
#
# Usage: scripts/slurm_cluster.sh start|stop|status|reset
#   start   install the Debian packages if missing, write configs, start the daemons (idempotent)
#   stop    cancel this cluster's jobs, stop the daemons, keep the state (job ids keep counting, accounting
#           keeps its history)
#   status  print which daemons run and the node's state; exit 0 only if the cluster answers
#   reset   stop and delete all state
# Runs as root without systemd. All state lives in $NUQLAB_SLURM_DIR (default /tmp/nuqlab-slurm); the only
# things outside it are /run/munge and /run/mysqld (the daemons' fixed socket folders) and, when absent,
# symlinks /etc/slurm/{slurm,gres,slurmdbd}.conf pointing into the state folder so sbatch/sacct find the config.
# Clients can also use SLURM_CONF=$NUQLAB_SLURM_DIR/etc/slurm.conf.
#
# Nodes: two slurmd daemons on this host (nuqlab1, nuqlab2; own ports, spool and pid files through %n), so
# multi-node jobs (torch.distributed over SLURM tasks) run for real. Partition `debug` (the default) holds
# nuqlab1 only, partition `all` both nodes. Each node declares 8 CPUs on any machine
# (SlurmdParameters=config_overrides): the test runs are tiny and mostly wait on I/O and Python start-up, so
# 8 one-CPU tasks share 2 real cores well and the tests' arrays run concurrently. 16 GiB schedulable memory,
# 1 GiB per CPU by default, two fake GPUs per node (gres on /dev/null clones). The node names must resolve
# (torch.distributed's master is the first node's name), so they are added to /etc/hosts as 127.0.0.1
# when they do not.
set -euo pipefail

STATE=${NUQLAB_SLURM_DIR:-/tmp/nuqlab-slurm}
NODES="nuqlab1 nuqlab2"
CPUS=${NUQLAB_SLURM_CPUS:-8}
MEM_MB=${NUQLAB_SLURM_MEM_MB:-16384}
PACKAGES="munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
export SLURM_CONF=$STATE/etc/slurm.conf

die() { echo "slurm_cluster: $*" >&2; exit 1; }
log() { echo "slurm_cluster: $*" >&2; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (the daemons need it); got uid $(id -u)"
}

install_packages() {
    local missing=0 bin
    for bin in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing=1
    done
    [ "$missing" = 0 ] && return 0
    command -v apt-get >/dev/null || die "missing SLURM binaries and no apt-get to install: $PACKAGES"
    log "installing $PACKAGES (about a minute)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null
}

pid_alive() {  # pid_alive FILE -> 0 if the pid in FILE runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local limit=$1 what=$2 i; shift 2
    for ((i = 0; i < limit * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$what did not come up in ${limit}s; see the logs in $STATE/log, $STATE/mariadb, $STATE/munge"
}

write_configs() {
    mkdir -p "$STATE"/{etc,log,run,ctld,spool,dev}
    chmod 755 "$STATE"
    for i in 0 1; do
        [ -c "$STATE/dev/gpu$i" ] || mknod "$STATE/dev/gpu$i" c 1 3
    done
    cat > "$STATE/etc/slurm.conf" <<CONF
# written by scripts/slurm_cluster.sh
ClusterName=nuqlab
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=15
MinJobAge=600
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=nuqlab1 NodeAddr=127.0.0.1 Port=6818 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
NodeName=nuqlab2 NodeAddr=127.0.0.1 Port=6830 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=nuqlab1 Default=YES MaxTime=INFINITE State=UP
PartitionName=all Nodes=nuqlab1,nuqlab2 MaxTime=INFINITE State=UP
CONF
    cat > "$STATE/etc/gres.conf" <<CONF
NodeName=nuqlab[1-2] Name=gpu File=$STATE/dev/gpu[0-1]
CONF
    cat > "$STATE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$STATE/etc/slurmdbd.conf"
    # Let plain `sbatch`/`sacct` find this cluster, but never replace a real cluster's configuration.
    mkdir -p /etc/slurm
    for f in slurm.conf gres.conf slurmdbd.conf; do
        if [ ! -e "/etc/slurm/$f" ] || [ "$(readlink "/etc/slurm/$f")" = "$STATE/etc/$f" ]; then
            ln -sfn "$STATE/etc/$f" "/etc/slurm/$f"
        fi
    done
}

start_munge() {
    mkdir -p /run/munge "$STATE/munge"
    chown munge:munge /run/munge "$STATE/munge"
    chmod 755 /run/munge
    pid_alive "$STATE/munge/munged.pid" && return 0
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
        || create-munge-key -f; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    runuser -u munge -- munged --pid-file "$STATE/munge/munged.pid" --log-file "$STATE/munge/munged.log" \
        --seed-file "$STATE/munge/munged.seed" --force
    wait_for 10 munge munge -n
}

start_mariadb() {
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    if [ ! -d "$STATE/mysql/mysql" ]; then
        mkdir -p "$STATE/mysql"
        chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
            --auth-root-authentication-method=socket --skip-test-db > "$STATE/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
    fi
    mkdir -p "$STATE/mariadb"
    chown mysql:mysql "$STATE/mariadb"
    pid_alive "$STATE/mariadb/mariadb.pid" && return 0
    # setsid + nohup: the daemon must outlive the shell (and the pytest process) that started it
    setsid nohup mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --skip-networking \
        --socket=/run/mysqld/mysqld.sock --pid-file="$STATE/mariadb/mariadb.pid" \
        --log-error="$STATE/mariadb/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb mariadb --no-defaults --socket=/run/mysqld/mysqld.sock -u root -e "select 1"
}

start_slurm() {
    if ! pid_alive "$STATE/run/slurmdbd.pid"; then
        slurmdbd
        wait_for 30 slurmdbd sacctmgr -i list cluster
    fi
    if ! pid_alive "$STATE/run/slurmctld.pid"; then
        slurmctld
        wait_for 30 slurmctld scontrol ping
    fi
    local node
    for node in $NODES; do
        mkdir -p "$STATE/spool/$node"
        pid_alive "$STATE/run/slurmd-$node.pid" || slurmd -N "$node"
    done
    for node in $NODES; do
        wait_for 30 "node $node" node_usable "$node"
        # A node drained in an earlier life stays drained across restarts: resume it.
        if sinfo -h -n "$node" -o %t | grep -Eq 'drain|down'; then
            scontrol update NodeName="$node" State=RESUME || true
        fi
        wait_for 30 "node $node (idle)" node_idle_or_busy "$node"
    done
}

node_usable() { sinfo -h -n "$1" -o %t | grep -Eqv 'unk|n/a'; }
node_idle_or_busy() { sinfo -h -n "$1" -o %t | grep -Eq '^(idle|mix|alloc|comp)'; }

resolve_node_names() {
    local node
    for node in $NODES; do
        getent hosts "$node" >/dev/null && continue
        # append (not sed -i): /etc/hosts is often a bind mount that cannot be replaced
        echo "127.0.0.1 $node  # nuqlab SLURM test cluster (scripts/slurm_cluster.sh)" >> /etc/hosts \
            || log "warning: cannot add $node to /etc/hosts: multi-node jobs will not find their master"
    done
}

stop_pidfile() {  # stop_pidfile FILE NAME
    local f=$1 i pid
    pid_alive "$f" || return 0
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$2 (pid $pid) ignored SIGTERM for 10 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
}

cmd_start() {
    need_root
    install_packages
    write_configs
    resolve_node_names
    start_munge
    start_mariadb
    start_slurm
    log "up: SLURM_CONF=$SLURM_CONF, nodes $NODES ($CPUS CPUs, $MEM_MB MB, gpu:2 each), state in $STATE"
}

cmd_stop() {
    # Jobs of this private test cluster die with it: cancel them so no slurmstepd outlives slurmd.
    if pid_alive "$STATE/run/slurmctld.pid"; then
        local jobs i
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "${jobs// /}" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 300; i++)); do
                [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    local node
    for node in $NODES; do
        stop_pidfile "$STATE/run/slurmd-$node.pid" "slurmd $node"
    done
    stop_pidfile "$STATE/run/slurmd.pid" slurmd  # written by an older version of this script
    stop_pidfile "$STATE/run/slurmctld.pid" slurmctld
    stop_pidfile "$STATE/run/slurmdbd.pid" slurmdbd
    stop_pidfile "$STATE/mariadb/mariadb.pid" mariadbd
    stop_pidfile "$STATE/munge/munged.pid" munged
    log "stopped"
}

cmd_status() {
    local name f ok=0
    for name in munged:munge/munged.pid mariadbd:mariadb/mariadb.pid slurmdbd:run/slurmdbd.pid \
                slurmctld:run/slurmctld.pid slurmd-nuqlab1:run/slurmd-nuqlab1.pid \
                slurmd-nuqlab2:run/slurmd-nuqlab2.pid; do
        f=$STATE/${name#*:}
        if pid_alive "$f"; then echo "${name%%:*}: running (pid $(cat "$f"))"; else echo "${name%%:*}: stopped"; ok=1; fi
    done
    [ "$ok" = 0 ] && sinfo -N -o "%N %t %c %m %G" 2>/dev/null || true
    return $ok
}

cmd_reset() {
    cmd_stop
    rm -rf "$STATE"
    for f in slurm.conf gres.conf slurmdbd.conf; do
        [ "$(readlink "/etc/slurm/$f" 2>/dev/null)" = "$STATE/etc/$f" ] && rm -f "/etc/slurm/$f"
    done
    log "state removed"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    *) die "usage: $0 start|stop|status|reset (got '${1:-}')" ;;
esac
