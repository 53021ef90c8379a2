"""tests/qemu/guest runs inside the QEMU guest only (`make qemu` boots it); on the host
its tests are not collected at all, so nothing there can pass or skip by accident."""
import os

collect_ignore_glob = [] if os.environ.get("QUICHSD_GUEST") == "1" else ["guest/*"]
