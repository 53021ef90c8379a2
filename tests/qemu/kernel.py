"""The guest kernel: Debian's packages, fetched through a private apt configuration and
extracted into a cache with `dpkg -x`, never installed on the host.

Everything version-specific is pinned here, in one place.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm-backports"
KVER = "6.12.95+deb12"                 # the ABI name in Debian's package names
PKG_VERSION = "6.12.95-1~bpo12+1"
FLAVOUR = "amd64"
KREL = f"{KVER}-{FLAVOUR}"             # `uname -r` in the guest
PACKAGES = (
    f"linux-image-{KREL}-unsigned",
    f"linux-headers-{KREL}",
    f"linux-headers-{KVER}-common",
    f"linux-kbuild-{KVER}",
)
# Used when the pinned version has left the archive's current index.
SNAPSHOT = "http://snapshot.debian.org/archive/debian/20260710T000000Z"


def cache_root() -> Path:
    base = os.environ.get("QUICHSD_QEMU_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "quichsd" / "qemu"


@dataclass(frozen=True)
class Kernel:
    root: Path                          # the extracted packages: boot/, lib/modules/, usr/src/

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{KREL}"

    @property
    def headers(self) -> Path:
        """The tree to pass to `make -C` for an out-of-tree module."""
        return self.root / "usr" / "src" / f"linux-headers-{KREL}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / KREL

    @property
    def updates(self) -> Path:
        """Where out-of-tree modules go, so depmod and modprobe find them."""
        return self.modules / "updates"

    def module_file(self, name: str) -> Path:
        """The .ko(.xz) of an in-tree module, by file name without the suffix."""
        for path in self.modules.joinpath("kernel").rglob(f"{name}.ko*"):
            return path
        raise FileNotFoundError(f"module {name} not in {self.modules}")

    def depmod(self) -> None:
        subprocess.run(["depmod", "-b", str(self.root), KREL], check=True)


def _apt_config(work: Path, uri: str) -> Path:
    for sub in ("lists/partial", "archives/partial"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(f"deb {uri} {SUITE} main\n")
    conf = work / "apt.conf"
    conf.write_text(
        f'Dir::Etc::SourceList "{work}/sources.list";\n'
        'Dir::Etc::SourceParts "/nonexistent";\n'
        f'Dir::State::Lists "{work}/lists";\n'
        f'Dir::Cache "{work}";\n'
        'Dir::State::status "/dev/null";\n'
        'Debug::NoLocking "true";\n'
        'APT::Sandbox::User "root";\n'
        'Acquire::Check-Valid-Until "false";\n'
    )
    return conf


def _debian_uri() -> str:
    """The machine's own Debian mirror (its apt sources), with our suite name instead."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and words[1].rstrip("/").endswith("/debian"):
                return words[1]
            if words[:1] == ["deb"]:
                uri = next((w for w in words[1:] if not w.startswith("[")), "")
                if uri.rstrip("/").endswith("/debian"):
                    return uri
    return "http://deb.debian.org/debian"


def _download(work: Path, dest: Path) -> None:
    pins = [f"{name}={PKG_VERSION}" for name in PACKAGES]
    errors = []
    for uri in (_debian_uri(), SNAPSHOT):
        env = dict(os.environ, APT_CONFIG=str(_apt_config(work / uri.split("/")[2], uri)))
        try:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            subprocess.run(["apt-get", "download", "-q", *pins], env=env, cwd=dest, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            return
        except subprocess.CalledProcessError as exc:
            errors.append(f"{uri}: {exc.stderr.decode(errors='replace').strip()}")
    raise RuntimeError("could not download the kernel packages:\n" + "\n".join(errors))


def _fix_headers(tree: Path, final: Path) -> None:
    """Make the header tree extracted in `tree` work once moved to `final`: Debian's links
    and includes are absolute /usr/src paths."""
    src, final_src = tree / "usr" / "src", final / "usr" / "src"
    common = f"linux-headers-{KVER}-common"
    makefile = src / f"linux-headers-{KREL}" / "Makefile"
    makefile.write_text(makefile.read_text().replace(f"/usr/src/{common}", str(final_src / common)))
    mods = tree / "lib" / "modules" / KREL
    for link, target in (("build", f"linux-headers-{KREL}"), ("source", common)):
        (mods / link).unlink(missing_ok=True)
        (mods / link).symlink_to(final_src / target)


def prepare() -> Kernel:
    """The kernel, fetched and extracted on first use, then reused from the cache."""
    root = cache_root() / KREL
    kernel = Kernel(root)
    if (root / ".ready").exists():
        return kernel
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise RuntimeError("fetching the guest kernel needs apt-get and dpkg (a Debian host)")
    tmp = cache_root() / f".{KREL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "debs").mkdir(parents=True)
    _download(tmp / "apt", tmp / "debs")
    extracted = tmp / "root"
    for deb in sorted((tmp / "debs").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(extracted)], check=True)
    _fix_headers(extracted, root)
    shutil.rmtree(root, ignore_errors=True)
    extracted.rename(root)
    shutil.rmtree(tmp, ignore_errors=True)
    kernel = Kernel(root)
    kernel.updates.mkdir(exist_ok=True)
    kernel.depmod()
    (root / ".ready").write_text(PKG_VERSION + "\n")
    return kernel
