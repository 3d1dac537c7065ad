"""A private Mosquitto: the system's broker on a free loopback port with a temporary config.

The demo and the fleet simulator need a broker nobody else uses; tests need one they can stop
and start on the same port to stage an outage. Everything the broker logs goes to a file in
its directory, read back with `log()` when something fails.

    with Mosquitto() as broker:            # a temporary directory, removed on exit
        publish_to("127.0.0.1", broker.port)

Raises BrokerError (never a bare FileNotFoundError) when mosquitto is not installed, exits at
start, or never accepts connections.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"

# Mosquitto 2.x refuses anonymous clients unless told otherwise, and listens on every interface
# unless the listener names one (mosquitto.conf(5), "listener", "allow_anonymous").
_CONF = """\
listener {port} {host}
allow_anonymous true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
"""


class BrokerError(RuntimeError):
    """The broker could not be started or answered nothing; the message says why and what to do."""


def free_port(host=HOST):
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout_s=5.0, host=HOST):
    """Block until something accepts TCP connections on `port`; TimeoutError names the port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    "nothing accepted connections on %s:%d within %.1f s" % (host, port, timeout_s)
                ) from None
            time.sleep(0.02)


def find_mosquitto(binary="mosquitto"):
    """The broker's path; BrokerError with the install command when it is missing.

    Debian installs it in /usr/sbin, which is not on every user's PATH.
    """
    found = shutil.which(binary)
    if found is None and os.sep not in binary:
        for d in ("/usr/sbin", "/usr/local/sbin"):
            candidate = os.path.join(d, binary)
            if os.access(candidate, os.X_OK):
                found = candidate
                break
    if found is None:
        raise BrokerError(
            "%s is not installed: run `make setup` (it runs `apt-get install mosquitto`), "
            "or install Mosquitto 2.x with your package manager" % binary
        )
    return found


class Mosquitto:
    """The system's Mosquitto 2.x as a child process on a private port.

    `tmp_dir` holds the config and the log (a temporary directory, removed by `close()`, when
    not given). `stop()`/`start()` keep the port, so clients see an outage and a recovery.
    With `persistent=True` the broker saves sessions and queued QoS 1 messages on stop and
    restores them on start.
    """

    def __init__(self, tmp_dir=None, port=None, binary="mosquitto", persistent=False, host=HOST):
        self.binary = find_mosquitto(binary)
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = tmp_dir is None
        self.dir = tempfile.mkdtemp(prefix="nbk-broker-") if tmp_dir is None else str(tmp_dir)
        self.conf_path = os.path.join(self.dir, "mosquitto-%d.conf" % self.port)
        self.log_path = os.path.join(self.dir, "mosquitto-%d.log" % self.port)
        conf = _CONF.format(port=self.port, host=host)
        if persistent:
            # "user root" keeps root so the broker can write its database into a root-owned
            # directory (as root it drops to user "mosquitto" otherwise).
            conf += "persistence true\npersistence_location %s/\nuser root\n" % self.dir
        else:
            conf += "persistence false\n"
        with open(self.conf_path, "w") as f:
            f.write(conf)
        # Started as root, Mosquitto drops privileges to user "mosquitto" before it reads the
        # rest of its config: the file must stay world-readable (toolchain.md §7).
        os.chmod(self.conf_path, 0o644)
        self._proc = None
        self._log_file = None

    @property
    def url(self):
        return "mqtt://%s:%d" % (self.host, self.port)

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s=5.0):
        """Start the broker and wait until it accepts connections; BrokerError otherwise."""
        if self.running:
            return self
        self._log_file = open(self.log_path, "ab")
        # A session of its own: a Ctrl-C meant for the parent does not reach the broker,
        # which the parent stops itself, after its own last words.
        self._proc = subprocess.Popen(
            [self.binary, "-c", self.conf_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise BrokerError(
                    "mosquitto exited with status %d at start on %s:%d; its log:\n%s"
                    % (code, self.host, self.port, self.log().strip() or "(empty)")
                )
            try:
                wait_for_port(self.port, timeout_s=0.1, host=self.host)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(
                        "mosquitto did not accept connections on %s:%d within %.1f s; its log:\n%s"
                        % (self.host, self.port, timeout_s, self.log().strip() or "(empty)")
                    ) from None

    def stop(self, timeout_s=5.0):
        """Terminate the broker (clients see the connection drop) and wait for it."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout_s)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        """Stop, and remove the directory when it is the broker's own temporary one."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        """Everything the broker logged so far (text)."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
