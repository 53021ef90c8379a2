# PID 1 of the guest after switch_root: set up the overlay root, run the script, power off.
R=/run/quichsd-results
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
. $R/env.sh
# /tmp and /var/tmp start empty; a checkout under one of them (a clone made in mktemp -d)
# is bound back at its own path, or the guest would not find the tree it is to test.
mkdir -p /run/quichsd-repo
mount --bind "$QUICHSD_REPO" /run/quichsd-repo
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp 2>/dev/null
if [ ! -d "$QUICHSD_REPO" ]; then
  mkdir -p "$QUICHSD_REPO"
  mount --bind /run/quichsd-repo "$QUICHSD_REPO"
fi
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# The guest kernel's modules stay in the host-side cache; the kernel's own request_module
# goes through this helper too.
cat > /run/quichsd-modprobe <<EOF
#!/bin/sh
exec /usr/sbin/modprobe -d "$QUICHSD_KERNEL_ROOT" "\$@"
EOF
chmod 755 /run/quichsd-modprobe
echo /run/quichsd-modprobe > /proc/sys/kernel/modprobe
ip link set lo up 2>/dev/null || /usr/sbin/ip link set lo up
hostname quichsd-guest
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "guest: $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
sh $R/run.sh
echo $? > $R/status
sync
echo o > /proc/sysrq-trigger 2>/dev/null
poweroff -f
