"""Real servers for the offsite tests: an OpenSSH sshd on loopback, and rclone
configurations that reach it (sftp, crypt over sftp, a local path).

Nothing here is a mock: rclone talks SFTP to a real sshd started for the test
on 127.0.0.1 with a temporary host key and authorized key, and stopped by its
PID. The tools must be installed (``tests/install_test_tools.sh``, which
``make test`` runs); when they are missing the tests FAIL, unless
``SQLITE_OPS_ALLOW_SKIP_OFFSITE=1`` says a skip is acceptable on this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
ALLOW_SKIP_ENV = "SQLITE_OPS_ALLOW_SKIP_OFFSITE"


def require_tools() -> None:
    """Fail (or, when explicitly allowed, skip) unless rclone, sshd and ssh-keygen exist."""
    missing = [tool for tool, path in (("rclone", shutil.which("rclone")),
                                       ("sshd", SSHD if os.path.exists(SSHD) else None),
                                       ("ssh-keygen", shutil.which("ssh-keygen")))
               if not path]
    if not missing:
        return
    why = (f"{', '.join(missing)} not installed: run tests/install_test_tools.sh as root "
           "(apt-get install rclone openssh-server)")
    if os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(f"{why}; skipped because {ALLOW_SKIP_ENV}=1")
    pytest.fail(why, pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)
    return path


class SSHServer:
    """sshd -D on 127.0.0.1:<free port>, one user (the one running the tests),
    public-key authentication only, serving the whole file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.host_key = keygen(root / "host_key")
        self.client_key = keygen(root / "client_key")
        self.authorized = root / "authorized_keys"
        shutil.copyfile(self.client_key.with_suffix(".pub"), self.authorized)
        os.chmod(self.authorized, 0o600)
        self.port = free_port()
        self.user = os.environ.get("USER") or subprocess.run(
            ["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        self.log = root / "sshd.log"
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
            "PermitRootLogin yes\nStrictModes no\nSubsystem sftp internal-sftp\n"
            f"PidFile {root / 'sshd.pid'}\nLogLevel ERROR\nMaxStartups 100\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SSHServer:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
        handle = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=handle, stderr=handle)
        self._handle = handle
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """Kill sshd and every connection process it started (a server that dies):
        the per-connection processes leave sshd's process group, so they are
        found by parent PID."""
        if self.proc is None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None
        self._handle.close()

    stop = kill

    def refuse_key(self) -> None:
        """From now on the client's key is not authorized (wrong credentials)."""
        self.authorized.write_text("")

    def rclone_env(self, name: str = "nas") -> dict[str, str]:
        """RCLONE_CONFIG_<NAME>_* settings for an sftp remote reaching this server."""
        prefix = f"RCLONE_CONFIG_{name.upper()}_"
        return {prefix + "TYPE": "sftp", prefix + "HOST": "127.0.0.1",
                prefix + "PORT": str(self.port), prefix + "USER": self.user,
                prefix + "KEY_FILE": str(self.client_key),
                prefix + "KNOWN_HOSTS_FILE": str(self.known_hosts())}

    def known_hosts(self) -> Path:
        path = self.root / "known_hosts"
        if not path.exists():
            pub = self.host_key.with_suffix(".pub").read_text().split()
            path.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        return path


def descendants(root: int) -> list[int]:
    """Every process below ``root``, read from /proc (children first)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found = children + found
        frontier = children
    return found


def obscure(secret: str) -> str:
    """rclone's obscured form of a password, as its config file holds it."""
    return subprocess.run(["rclone", "obscure", secret], capture_output=True, text=True,
                          check=True).stdout.strip()


def write_rclone_config(path: Path, sections: dict[str, dict[str, str]]) -> Path:
    """An rclone config file (INI), private."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    os.chmod(path, 0o600)
    return path
