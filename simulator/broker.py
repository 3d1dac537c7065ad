"""A private Mosquitto: the system's broker on a free loopback port with a temporary config.

The one Mosquitto runner of the project: the demo and the fleet simulator need a broker nobody
else uses; tests (tests/support/servers.py) need one they can stop and start on the same port to
stage an outage, with persistent sessions, TLS, or Nagle off. Everything the broker logs goes to
a file in its directory, read back with `log()` when something fails.

    with Mosquitto() as broker:            # a temporary directory, removed on exit
        publish_to("127.0.0.1", broker.port)
    broker = Mosquitto(tmp_dir, tls=True).start()   # TLS only; clients trust broker.ca.ca_pem

Raises BrokerError (never a bare FileNotFoundError) when mosquitto or openssl is not installed,
the broker exits at start (say, its port was taken), or never accepts connections.
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

    - `persistent=True`: sessions and queued QoS 1 messages are saved on stop and restored on
      start, so a subscriber with clean_session=False misses nothing across a restart.
    - `tls=True`: the listener speaks TLS only, with a LocalCA made in `tmp_dir` (or pass a
      LocalCA); `ca` is it, clients verify against `ca.ca_pem` (`ca.ca_der` for MicroPython).
    - `nodelay=True`: Nagle off on the broker's sockets.
    """

    def __init__(
        self,
        tmp_dir=None,
        port=None,
        binary="mosquitto",
        persistent=False,
        host=HOST,
        tls=False,
        nodelay=False,
    ):
        self.binary = find_mosquitto(binary)
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = tmp_dir is None
        self.dir = tempfile.mkdtemp(prefix="nbk-broker-") if tmp_dir is None else str(tmp_dir)
        self.conf_path = os.path.join(self.dir, "mosquitto-%d.conf" % self.port)
        self.log_path = os.path.join(self.dir, "mosquitto-%d.log" % self.port)
        conf = _CONF.format(port=self.port, host=host)
        self.ca = None
        if tls:
            self.ca = tls if isinstance(tls, LocalCA) else LocalCA(self.dir)
            # these apply to the listener above (mosquitto.conf(5), "Certificate based SSL/TLS")
            conf += "cafile %s\ncertfile %s\nkeyfile %s\n" % (
                self.ca.ca_pem,
                self.ca.cert_pem,
                self.ca.key_pem,
            )
        if persistent or tls:
            # "user root" keeps root so the broker can write its database and read the key in a
            # root-owned directory (as root it drops to user "mosquitto" otherwise).
            conf += "user root\n"
        if persistent:
            conf += "persistence true\npersistence_location %s/\n" % self.dir
        else:
            conf += "persistence false\n"
        if nodelay:
            # Mosquitto's default leaves Nagle on: with several QoS 1 messages in flight its
            # PUBACKs then wait for the client's delayed ACK (measured: 1.6k vs 11k msg/s).
            conf += "set_tcp_nodelay true\n"
        with open(self.conf_path, "w") as f:
            f.write(conf)
        # Started as root, Mosquitto drops privileges to user "mosquitto" before it reads the
        # rest of its config: the file must stay world-readable (toolchain.md §7).
        os.chmod(self.conf_path, 0o644)
        self._proc = None
        self._log_file = None

    @property
    def url(self):
        scheme = "mqtts" if self.ca is not None else "mqtt"
        return "%s://%s:%d" % (scheme, self.host, self.port)

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
        mark = self._log_file.tell()  # only this run's lines count below
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
            # "... running" is logged once every listener is bound; a port someone else holds
            # makes it exit instead, where a connect test alone would reach the other server.
            if b" running" in self._log_since(mark):
                try:
                    wait_for_port(
                        self.port, timeout_s=max(0.1, deadline - time.monotonic()), host=self.host
                    )
                    return self
                except TimeoutError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    "mosquitto did not accept connections on %s:%d within %.1f s; its log:\n%s"
                    % (self.host, self.port, timeout_s, self.log().strip() or "(empty)")
                )
            time.sleep(0.02)

    def _log_since(self, mark):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read()
        except OSError:
            return b""

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
        """Stop, then start on the same port (an outage and a recovery)."""
        self.stop()
        return self.start()

    def close(self):
        """Stop, and remove the directory when it is the broker's own temporary one."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        """Everything the broker logged so far (text)."""
        return self._log_since(0).decode("utf-8", "replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class LocalCA:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1, made in `directory`
    with the openssl CLI (EC P-256, valid `days`).

    `ca_pem` is what a CPython or paho client trusts; `ca_der` is what MicroPython's
    SSLContext.load_verify_locations(cadata=...) takes; `cert_pem`/`key_pem` are the server's.
    """

    def __init__(self, directory, days=2):
        d = str(directory)
        self.ca_pem = os.path.join(d, "ca.pem")
        self.ca_der = os.path.join(d, "ca.der")
        self.key_pem = os.path.join(d, "server.key")
        self.cert_pem = os.path.join(d, "server.pem")
        openssl = shutil.which("openssl")
        if openssl is None:
            raise BrokerError("openssl is not installed: it makes the TLS test certificates")
        ca_key = os.path.join(d, "ca.key")
        csr = os.path.join(d, "server.csr")
        ext = os.path.join(d, "server.ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        days = str(days)
        steps = (
            ["req", "-x509", *ec, "-keyout", ca_key, "-out", self.ca_pem, "-days", days]
            + ["-subj", "/CN=nbk test CA"],
            ["req", *ec, "-keyout", self.key_pem, "-out", csr, "-subj", "/CN=localhost"],
            ["x509", "-req", "-in", csr, "-CA", self.ca_pem, "-CAkey", ca_key, "-CAcreateserial"]
            + ["-out", self.cert_pem, "-days", days, "-extfile", ext],
            ["x509", "-in", self.ca_pem, "-outform", "DER", "-out", self.ca_der],
        )
        for args in steps:
            proc = subprocess.run([openssl, *args], capture_output=True, text=True)
            if proc.returncode != 0:
                raise BrokerError(
                    "openssl %s failed (status %d): %s"
                    % (args[0], proc.returncode, proc.stderr.strip()[-500:])
                )
