# What a container sees, printed in "== name" sections for tests/src/probe.rs
# to normalise and compare between runtimes. busybox sh; never writes outside
# /tmp and the container's own namespaces (it also runs --privileged).
s() { echo "== $1"; }

s status
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters|Groups):' /proc/self/status
s id
id
s idmap
cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups
s process
echo "cwd=$(pwd) umask=$(umask) hostname=$(hostname) tty=$(tty)"
echo "oom_score_adj=$(cat /proc/self/oom_score_adj) personality=$(cat /proc/self/personality)"
# nice (19) and scheduling policy (41) of this shell.
awk '{ print "nice=" $19 " policy=" $41 }' /proc/self/stat
ionice -p $$ 2>&1
taskset -p $$ 2>&1 | sed 's/.*affinity mask: /affinity=/'
tail -n +2 /proc/self/limits
s env
env | sort
s masked
for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats \
    /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware \
    /sys/devices/virtual/powercap /proc/interrupts; do
  if [ -d "$p" ]; then
    echo "$p dir entries=$(ls -A "$p" 2>/dev/null | wc -l)"
  elif [ -e "$p" ]; then
    echo "$p $(stat -c %F "$p") read=$(head -c 64 "$p" 2>/dev/null | wc -c)"
  else
    echo "$p absent"
  fi
done
s writable
# test -w asks access(2), which says EROFS for a read-only mount without writing.
for p in / /tmp /proc/bus /proc/fs /proc/irq /proc/sys /proc/sys/kernel/domainname \
    /proc/sysrq-trigger /sys /sys/fs/cgroup /dev /dev/shm /dev/mqueue /proc; do
  if [ -e "$p" ]; then
    test -w "$p" && echo "$p writable" || echo "$p not-writable"
  else
    echo "$p absent"
  fi
done
s mountinfo
cat /proc/self/mountinfo
s dev
find /dev -path /dev/shm/\* -prune -o -path /dev/mqueue/\* -prune -o -print | sort |
  while read -r f; do stat -c '%n %F %a %u:%g %t:%T' "$f"; done
s net
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort
ip -o link show lo | sed 's/.*<\([^>]*\)>.*/lo flags \1/'
s actions
try() { out=$("$@" 2>&1); echo "$* -> $? $out"; }
try unshare -U true
try unshare -m true
try unshare -n true
try mkdir -p /tmp/probe-m
try mount -t tmpfs probe /tmp/probe-m
try umount /tmp/probe-m
try chown 1:1 /tmp/probe-m
try mknod /tmp/probe-null c 1 3
try touch /probe-rootfs-write
try rm -rf /probe-rootfs-write /tmp/probe-m /tmp/probe-null
s end
# runc-v2 copies output after the exit: give its reader a moment.
sleep 0.2
