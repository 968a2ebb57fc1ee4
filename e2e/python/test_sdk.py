"""End-to-end tests of the official Python `pusher` SDK (PyPI `pusher` 3.3.4) against the
real switchboard binary, with `websocket-client` as the Pusher WebSocket client.

    python -m pip install pusher==3.3.4 websocket-client==1.9.2
    SWITCHBOARD_BIN=target/debug/switchboard python e2e/python/test_sdk.py

The binary is $SWITCHBOARD_BIN, or target/debug/switchboard of this repository. It is
started once for the whole file, as e2e/server.mjs starts it for the JS tests: on a free
loopback port, metrics off, a fresh data directory, and no SWITCHBOARD_* variable of the
calling environment. Every wait has a deadline, so a broken server fails the run instead of
hanging it.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import pusher
import websocket  # websocket-client

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
# The SDK accepts numeric app ids only.
APP_ID, KEY, SECRET = "4242", "python-key", "python-secret"
READY_TIMEOUT = 15.0
WAIT = 5.0
STOP_GRACE = 5.0


def binary_path():
    bin_ = os.environ.get("SWITCHBOARD_BIN") or os.path.join(
        HERE, "..", "..", "target", "debug", "switchboard"
    )
    bin_ = os.path.abspath(bin_)
    if not os.path.exists(bin_):
        sys.exit(f"switchboard binary not found at {bin_}: run `cargo build` or set SWITCHBOARD_BIN")
    return bin_


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """`switchboard serve` on a free port; ready once GET /up answers 200."""

    def __init__(self):
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix="switchboard-e2e-py-")
        self.log = open(os.path.join(self.data_dir, "server.log"), "w+b")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
            SWITCHBOARD_HOST=HOST,
            SWITCHBOARD_PORT=str(self.port),
            SWITCHBOARD_METRICS_ENABLED="false",
            SWITCHBOARD_DATA_DIR=self.data_dir,
            SWITCHBOARD_APP_ID=APP_ID,
            SWITCHBOARD_APP_KEY=KEY,
            SWITCHBOARD_APP_SECRET=SECRET,
        )
        self.proc = subprocess.Popen(
            [binary_path(), "serve"],
            cwd=self.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                out = self.output()
                self.stop()
                raise RuntimeError(f"switchboard exited ({self.proc.returncode}) before it was ready:\n{out}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/up", timeout=1) as res:
                    if res.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet (or 503)
            if time.monotonic() > deadline:
                out = self.output()
                self.stop()
                raise RuntimeError(f"switchboard was not ready within {READY_TIMEOUT} s:\n{out}")
            time.sleep(0.05)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-20000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GRACE)
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Client:
    """A Pusher protocol 7 WebSocket connection."""

    def __init__(self, port, key=KEY):
        url = f"ws://{HOST}:{port}/app/{key}?protocol=7&client=python-e2e&version=1.0"
        self.ws = websocket.create_connection(url, timeout=WAIT)
        established = self.expect("pusher:connection_established")
        self.socket_id = json.loads(established["data"])["socket_id"]

    def send(self, event, data):
        self.ws.send(json.dumps({"event": event, "data": data}))

    def next_frame(self, deadline):
        """The next text message as JSON, or ("close", code) for a close frame."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("nothing received within the wait")
            self.ws.settimeout(left)
            try:
                opcode, data = self.ws.recv_data()
            except websocket.WebSocketTimeoutException:
                raise AssertionError("nothing received within the wait") from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return ("close", int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(data)

    def expect(self, event, channel=None, timeout=WAIT):
        """The next message named `event` (on `channel`), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(deadline)
            if isinstance(frame, tuple):
                raise AssertionError(f"closed with {frame[1]} while waiting for {event}")
            if frame.get("event") == event and (channel is None or frame.get("channel") == channel):
                return frame

    def expect_close(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(deadline)
            if isinstance(frame, tuple):
                return frame[1]

    def ping(self):
        """pusher:ping answered by pusher:pong: the connection is open."""
        self.send("pusher:ping", {})
        self.expect("pusher:pong")

    def subscribe(self, channel, **auth):
        self.send("pusher:subscribe", {"channel": channel, **auth})
        deadline = time.monotonic() + WAIT
        while True:
            frame = self.next_frame(deadline)
            if isinstance(frame, tuple):
                raise AssertionError(f"closed with {frame[1]} while subscribing to {channel}")
            if frame.get("channel") == channel and frame.get("event") in (
                "pusher_internal:subscription_succeeded",
                "pusher:subscription_error",
            ):
                return frame

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:  # already closed by the server
            pass


class PythonSdk(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.sdk = pusher.Pusher(
            app_id=APP_ID, key=KEY, secret=SECRET, host=HOST, port=cls.server.port, ssl=False, timeout=WAIT
        )

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            cls.server.stop()

    def connect(self):
        c = Client(self.server.port)
        self.addCleanup(c.close)
        return c

    def wait_for(self, what, check):
        """Polls `check` (an SDK call) until it is true, within the wait."""
        deadline = time.monotonic() + WAIT
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                self.fail(f"{what} not seen within {WAIT} s")
            time.sleep(0.05)

    def test_trigger_reaches_a_websocket_subscriber(self):
        c = self.connect()
        ok = c.subscribe("py-trigger")
        self.assertEqual(ok["event"], "pusher_internal:subscription_succeeded", ok)
        self.assertEqual(self.sdk.trigger("py-trigger", "greeting", {"hello": "world"}), {})
        got = c.expect("greeting", "py-trigger")
        self.assertEqual(json.loads(got["data"]), {"hello": "world"})

    def test_trigger_excludes_the_given_socket(self):
        sender, other = self.connect(), self.connect()
        for c in (sender, other):
            c.subscribe("py-exclude")
        self.sdk.trigger(["py-exclude"], "news", "first", socket_id=sender.socket_id)
        self.sdk.trigger(["py-exclude"], "news", "second")
        self.assertEqual(other.expect("news")["data"], "first")
        # The sender's next event is the second: the first was not sent to it.
        self.assertEqual(sender.expect("news")["data"], "second")

    def test_trigger_batch(self):
        c = self.connect()
        c.subscribe("py-batch-a")
        c.subscribe("py-batch-b")
        res = self.sdk.trigger_batch(
            [
                {"channel": "py-batch-a", "name": "one", "data": {"n": 1}},
                {"channel": "py-batch-b", "name": "two", "data": "plain"},
            ]
        )
        self.assertEqual(res, {})
        self.assertEqual(json.loads(c.expect("one", "py-batch-a")["data"]), {"n": 1})
        self.assertEqual(c.expect("two", "py-batch-b")["data"], "plain")

    def test_channels_info_and_channel_info(self):
        c = self.connect()
        c.subscribe("py-info-1")
        c.subscribe("py-info-2")
        listed = self.sdk.channels_info(prefix_filter="py-info-", attributes=["subscription_count"])
        self.assertEqual(
            listed,
            {"channels": {"py-info-1": {"subscription_count": 1}, "py-info-2": {"subscription_count": 1}}},
        )
        one = self.sdk.channel_info("py-info-1", attributes=["subscription_count"])
        self.assertEqual(one, {"occupied": True, "subscription_count": 1})
        self.assertEqual(self.sdk.channel_info("py-info-empty"), {"occupied": False})

    def test_users_info_on_a_presence_channel(self):
        channel = "presence-py-room"
        members = []
        for user in ("ada", "bob"):
            c = self.connect()
            data = {"user_id": user, "user_info": {"name": user.title()}}
            auth = self.sdk.authenticate(channel=channel, socket_id=c.socket_id, custom_data=data)
            ok = c.subscribe(channel, auth=auth["auth"], channel_data=auth["channel_data"])
            self.assertEqual(ok["event"], "pusher_internal:subscription_succeeded", ok)
            members.append(c)
        users = self.sdk.users_info(channel)
        self.assertEqual(sorted(u["id"] for u in users["users"]), ["ada", "bob"])
        listed = self.sdk.channels_info(prefix_filter="presence-py-", attributes=["user_count"])
        self.assertEqual(listed, {"channels": {channel: {"user_count": 2}}})
        members[1].close()
        self.wait_for("bob leaving", lambda: self.sdk.users_info(channel) == {"users": [{"id": "ada"}]})

    def test_private_channel_authenticated_by_the_sdk(self):
        c = self.connect()
        auth = self.sdk.authenticate(channel="private-py", socket_id=c.socket_id)
        ok = c.subscribe("private-py", auth=auth["auth"])
        self.assertEqual(ok["event"], "pusher_internal:subscription_succeeded", ok)
        self.sdk.trigger("private-py", "secret-news", {"x": 1})
        self.assertEqual(json.loads(c.expect("secret-news", "private-py")["data"]), {"x": 1})
        # The signature of another socket is refused.
        other = self.connect()
        refused = other.subscribe("private-py", auth=auth["auth"])
        self.assertEqual(refused["event"], "pusher:subscription_error", refused)

    def test_terminate_user_connections_closes_them_with_4009(self):
        target, bystander = self.connect(), self.connect()
        for c, user in ((target, "py-user-1"), (bystander, "py-user-2")):
            auth = self.sdk.authenticate_user(c.socket_id, {"id": user})
            c.send("pusher:signin", {"auth": auth["auth"], "user_data": auth["user_data"]})
            c.expect("pusher:signin_success")
        # The SDK posts /users/{id}/terminate_connections, no /apps/{id} prefix.
        self.assertEqual(self.sdk.terminate_user_connections("py-user-1"), {})
        self.assertEqual(target.expect_close(), 4009)
        bystander.ping()

    def test_bad_credentials_are_refused_with_401(self):
        for key, secret in ((KEY, "not-the-secret"), ("not-the-key", SECRET)):
            bad = pusher.Pusher(app_id=APP_ID, key=key, secret=secret, host=HOST, port=self.server.port, ssl=False)
            with self.assertRaises(pusher.errors.PusherBadAuth):
                bad.trigger("py-bad", "e", "x")
            with self.assertRaises(pusher.errors.PusherBadAuth):
                bad.terminate_user_connections("py-user-1")


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    failed = len(result.failures) + len(result.errors)
    print(f"python-sdk: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed")
    sys.exit(0 if result.wasSuccessful() and result.testsRun > 0 else 1)
