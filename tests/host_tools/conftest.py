"""Fixtures for nbk's board-side tests: virtual boards and a fake device-management service."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nbk.virtualboard import VirtualBoard


@pytest.fixture
def board_factory(tmp_path):
    """Start virtual boards on demand (`board_factory(name, **options)`); all stop at teardown."""
    boards = []

    def make(name="board", **options):
        board = VirtualBoard(tmp_path / name, **options)
        boards.append(board)
        return board.start()

    yield make
    for board in boards:
        board.close()


@pytest.fixture
def virtual_board(board_factory):
    """One running virtual board: `.port` is its pty, `.root` its filesystem."""
    return board_factory()


class RegistrationService:
    """POST /api/devices/register as contracts.md §5 describes: the server picks the id.

    `fail_with` = (status, body) makes the next requests fail; `requests` keeps what arrived.
    """

    API_KEY = "nbk$2b$10$Zq8/secret.key.value/that+looks+like+a+bcrypt$hash.0123456789abcd"
    TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJkZXZpY2UiOiJ4In0.c2lnbmF0dXJl"

    def __init__(self):
        self.requests = []
        self.fail_with = None
        self._lock = threading.Lock()
        self._counter = 0xA1B2C3D0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = service.answer(self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, path, headers, body):
        with self._lock:
            self.requests.append({"path": path, "body": json.loads(body or b"null")})
            if self.fail_with:
                return self.fail_with
            if path != "/api/devices/register":
                return 404, {"success": False, "error": "not found"}
            if headers.get("Content-Type") != "application/json":
                return 400, {"success": False, "error": "content type"}
            request = json.loads(body)
            if not request.get("name") or not request.get("sensors"):
                return 400, {"success": False, "error": "name and sensors are required"}
            self._counter += 1
            return 201, {
                "success": True,
                "data": {
                    "deviceId": "ESP32-%08X" % self._counter,
                    "name": request["name"],
                    "deviceType": request.get("deviceType", "ESP32-S3"),
                    "sensors": request["sensors"],
                    "apiKey": self.API_KEY,
                    "token": self.TOKEN,
                    "status": "registered",
                },
            }

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def registration_service():
    service = RegistrationService()
    yield service
    service.close()
