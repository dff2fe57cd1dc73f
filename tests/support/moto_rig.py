#!/usr/bin/env python3
"""Lockstep test rig: a moto server (AWS Secrets Manager / STS emulator) on loopback.

usage: moto_rig.py [PORT]      PORT 0 or absent = pick a free port

Contract (the Rust test fixture and dev.sh rely on it):
  * binds 127.0.0.1 only; prints exactly one line "READY http://127.0.0.1:<port>"
    to stdout once the server answers HTTP; everything else goes to stderr;
  * stops on SIGTERM/SIGINT, and when stdin reaches EOF if RIG_EXIT_ON_STDIN_EOF=1;
  * the /moto-api/recorder/* log goes to a per-instance temporary file
    (MOTO_RECORDER_FILEPATH), removed on exit, unless MOTO_RECORDER_FILEPATH is
    already set in the environment;
  * werkzeug's per-request access log is off unless RIG_MOTO_ACCESS_LOG=1;
  * RIG_STS_SESSION_SECONDS=N makes every STS session expire after N seconds;
  * RIG_MOTO_NAME_INDEX=1 (benchmarks only) looks secrets up through a name and ARN index
    instead of moto's scan of every secret per lookup: same answers, O(1) instead of O(secrets)
    per call, so that a run with 8,000 secrets measures the operator rather than the emulator.
"""

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"


def log(msg: str) -> None:
    print(f"moto-rig: {msg}", file=sys.stderr, flush=True)


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if not 0 <= port <= 65535:
        log(f"bad port {port}")
        return 2

    # The recorder reads MOTO_RECORDER_FILEPATH when moto is imported.
    tmpdir = None
    if not os.environ.get("MOTO_RECORDER_FILEPATH"):
        tmpdir = tempfile.mkdtemp(prefix="moto-rig-")
        os.environ["MOTO_RECORDER_FILEPATH"] = os.path.join(tmpdir, "recording.jsonl")
    # download-recording answers 500 (FileNotFoundError) until the file exists.
    open(os.environ["MOTO_RECORDER_FILEPATH"], "a").close()

    # stdout carries only the READY line.
    ready_out = sys.stdout
    sys.stdout = sys.stderr

    stop = threading.Event()
    reason = []

    def on_signal(signum, _frame):
        reason.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if os.environ.get("RIG_EXIT_ON_STDIN_EOF") == "1":
        def watch_stdin():
            try:
                while os.read(sys.stdin.fileno(), 65536):
                    pass
            except OSError:
                pass
            reason.append("stdin EOF")
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    if os.environ.get("RIG_MOTO_ACCESS_LOG") != "1":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from moto.server import ThreadedMotoServer  # noqa: E402 (after the env is set)

    # RIG_STS_SESSION_SECONDS=N: every STS session (AssumeRole, AssumeRoleWithWebIdentity) expires
    # after N seconds whatever was asked, so tests can watch credentials being renewed.
    session_seconds = os.environ.get("RIG_STS_SESSION_SECONDS")
    if session_seconds:
        from moto.sts.models import STSBackend  # noqa: E402

        original = STSBackend.assume_role

        def short_session(self, *args, **kwargs):
            kwargs["duration"] = int(session_seconds)
            return original(self, *args, **kwargs)

        STSBackend.assume_role = short_session
        log(f"STS sessions last {session_seconds}s")

    if os.environ.get("RIG_MOTO_NAME_INDEX") == "1":
        index_secret_lookups()
        log("secret lookups indexed by name and ARN (benchmark speed-up)")

    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    # start() waits forever if the bind fails; run it in a thread and watch it.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(30)
    inner = getattr(server, "_thread", None)
    if starter.is_alive() or inner is None or not inner.is_alive():
        log(f"moto server did not start on {HOST}:{port}")
        return 1
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    # Ready = it answers an HTTP request (any status). Never use a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 30
    while True:
        try:
            with opener.open(f"{endpoint}/moto-api/recorder/download-recording", timeout=2) as r:
                r.read()
            break
        except urllib.error.HTTPError:
            break
        except OSError as e:
            if time.monotonic() > deadline or stop.is_set():
                log(f"moto server not answering: {e}")
                server.stop()
                return 1
            time.sleep(0.05)

    if not stop.is_set():
        ready_out.write(f"READY {endpoint}\n")
        ready_out.flush()
        log(f"serving on {endpoint}, recorder file {os.environ['MOTO_RECORDER_FILEPATH']}")

    while not stop.wait(1.0):
        pass
    log(f"stopping ({', '.join(reason) or 'stop'})")
    server.stop()
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)
    log("stopped")
    return 0


def index_secret_lookups() -> None:
    """Make moto's SecretsStore find a secret by name or full ARN without scanning every secret.

    moto keys the store by name and answers a lookup by walking all secrets for one whose ARN or
    name equals the key, then by the name in a partial ARN. This keeps the same answers: a name is
    a key of the dict, a full ARN is found through an ARN -> name map kept beside it, and anything
    else (a partial ARN) takes moto's own path."""
    from moto.secretsmanager.models import SecretsStore  # noqa: E402

    plain_get, plain_contains, plain_pop = SecretsStore.get, SecretsStore.__contains__, SecretsStore.pop

    def arns(store):
        index = store.__dict__.get("_rig_arns")
        if index is None or len(index) != dict.__len__(store):
            index = {v.arn: k for k, v in dict.items(store)}
            store.__dict__["_rig_arns"] = index
        return index

    def direct(store, key):
        if dict.__contains__(store, key):
            return key
        name = arns(store).get(key)
        if name is not None and dict.__contains__(store, name) and dict.__getitem__(store, name).arn == key:
            return name
        return None

    def setitem(store, key, value):
        dict.__setitem__(store, key, value)
        arns(store)[value.arn] = key

    def getitem(store, key):
        name = direct(store, key)
        return dict.__getitem__(store, name) if name is not None else plain_get(store, key) or dict.__getitem__(store, key)

    def get(store, key):
        name = direct(store, key)
        return dict.__getitem__(store, name) if name is not None else plain_get(store, key)

    def contains(store, key):
        return direct(store, key) is not None or plain_contains(store, key)

    def pop(store, key):
        name = direct(store, key)
        found = dict.pop(store, name, None) if name is not None else plain_pop(store, key)
        store.__dict__.pop("_rig_arns", None)
        return found

    SecretsStore.__setitem__ = setitem
    SecretsStore.__getitem__ = getitem
    SecretsStore.get = get
    SecretsStore.__contains__ = contains
    SecretsStore.pop = pop


if __name__ == "__main__":
    sys.exit(main())
