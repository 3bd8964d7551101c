"""Real servers on 127.0.0.1 that receive what notices send, for tests: team webhooks (HTTP) and
e-mail (SMTP, aiosmtpd)."""

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


class WebhookReceiver:
    """Records each POST (headers and JSON body); answers with the next status of `statuses`,
    then 200 once they are used up, each after `delay` seconds."""

    def __init__(self, statuses=(), delay=0):
        self.statuses = list(statuses)
        self.received = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(
                    {"headers": dict(self.headers), "json": json.loads(body), "at": time.monotonic()}
                )
                time.sleep(delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try later")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gpu"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class MailReceiver:
    """An SMTP server. Records each message sent to it (`received`: recipients, text, time, whether it
    was accepted). A recipient in `refusals` has that many of its next messages refused with 451 (try
    again later). With `hold`, a message is answered only once `release()` is called, and `arrived`
    is set when one comes in: a send in flight."""

    def __init__(self, refusals=None, hold=False):
        self.refusals = dict(refusals or {})
        self.received = []
        self.arrived = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        self.arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
        refused = [to for to in envelope.rcpt_tos if self.refusals.get(to, 0) > 0]
        for to in refused:
            self.refusals[to] -= 1
        self.received.append({
            "to": list(envelope.rcpt_tos), "text": envelope.content.decode(), "at": time.monotonic(),
            "accepted": not refused,
        })
        return "451 Try again later" if refused else "250 Message accepted for delivery"

    def accepted(self):
        return [message for message in self.received if message["accepted"]]

    def release(self):
        self.released.set()

    def settings(self):
        """The e-mail settings that send to this server."""
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": self.port,
        }

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.released.set()
        self.controller.stop()
