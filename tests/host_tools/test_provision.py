"""nbk provision on virtual boards, against a fake device-management service on loopback."""

import json

import pytest
from click.testing import CliRunner
from nbk.cli import main
from nbk.errors import DeviceError, NbkError
from nbk.provision import build_config, masked, provision, read_batch
from nbk.transport.base import Transport

PASSWORD = "s3cret-Wifi-pass!"


def nbk(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def said(result):
    """The output with line wrapping undone (rich wraps at the terminal width)."""
    return " ".join(result.output.split())


def read_config(board):
    return json.loads((board.root_path / "config.json").read_text())


def read_record(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_provision_writes_verified_config_without_echoing_the_password(virtual_board, tmp_path):
    record = tmp_path / "record.jsonl"
    result = nbk(
        "--json",
        "provision",
        "--port",
        virtual_board.port,
        "--device-id",
        "lab-node-1",
        "--wifi-ssid",
        "bench",
        "--server",
        "mqtt://10.0.0.2:1883",
        "--record",
        str(record),
        env={"NBK_WIFI_PASSWORD": PASSWORD},
    )
    assert result.exit_code == 0, result.output
    config = read_config(virtual_board)
    assert config["device_id"] == "lab-node-1"
    assert config["network"]["ssid"] == "bench" and config["network"]["password"] == PASSWORD
    # firmware/config.py's validation filled in what the URL implies
    assert config["uplink"]["url"] == "mqtt://10.0.0.2:1883"
    assert (config["uplink"]["host"], config["uplink"]["port"]) == ("10.0.0.2", 1883)
    assert "safe_mode" not in config  # runtime keys are never saved
    shown = json.loads(result.stdout)
    assert shown["config"]["network"]["password"] == "***"
    assert PASSWORD not in result.output and PASSWORD not in record.read_text()
    (line,) = read_record(record)
    assert line["status"] == "ok" and line["device_id"] == "lab-node-1" and line["ssid"] == "bench"


def test_register_stores_the_service_id_and_key_and_never_prints_them(
    virtual_board, registration_service, tmp_path
):
    record = tmp_path / "record.jsonl"
    result = nbk(
        "provision",
        "--port",
        virtual_board.port,
        "--device-id",
        "lab-node-2",
        "--wifi-ssid",
        "bench",
        "--wifi-password",
        PASSWORD,
        "--server",
        "mqtt://h:1883",
        "--register",
        registration_service.url,
        "--record",
        str(record),
    )
    assert result.exit_code == 0, result.output
    (request,) = registration_service.requests
    assert request["body"]["name"] == "lab-node-2"
    assert [s["type"] for s in request["body"]["sensors"]] == ["LD2410", "PIR", "MQ134"]
    config = read_config(virtual_board)
    assert config["device_id"] == "ESP32-A1B2C3D1"  # the service chooses the id
    assert config["uplink"]["api_key"] == registration_service.API_KEY  # stored verbatim
    assert config["registration"]["token"] == registration_service.TOKEN
    for secret in (PASSWORD, registration_service.API_KEY, registration_service.TOKEN):
        assert secret not in result.output
        assert secret not in record.read_text()
    assert "ESP32-A1B2C3D1" in result.output
    (line,) = read_record(record)
    assert line["registered"] is True and line["requested_id"] == "lab-node-2"


def test_registration_failure_writes_nothing_and_is_recorded(
    virtual_board, registration_service, tmp_path
):
    registration_service.fail_with = (500, {"success": False, "error": "database down"})
    record = tmp_path / "record.jsonl"
    result = nbk(
        "provision",
        "--port",
        virtual_board.port,
        "--device-id",
        "n3",
        "--wifi-ssid",
        "b",
        "--wifi-password",
        PASSWORD,
        "--server",
        "mqtt://h:1883",
        "--register",
        registration_service.url,
        "--record",
        str(record),
    )
    assert result.exit_code == 1
    assert "answered 500 database down" in said(result)
    assert not (virtual_board.root_path / "config.json").exists()
    (line,) = read_record(record)
    assert line["status"] == "failed" and "database down" in line["error"]


def test_unreachable_service_names_the_url(virtual_board, tmp_path):
    result = nbk(
        "provision",
        "--port",
        virtual_board.port,
        "--device-id",
        "n4",
        "--wifi-ssid",
        "b",
        "--wifi-password",
        PASSWORD,
        "--server",
        "mqtt://h:1883",
        "--register",
        "http://127.0.0.1:9",
        "--record",
        str(tmp_path / "r.jsonl"),
    )
    assert result.exit_code == 1
    assert "cannot reach the registration service at http://127.0.0.1:9" in said(result)


def test_batch_provisions_several_boards_at_once(board_factory, registration_service, tmp_path):
    boards = [board_factory("b%d" % i) for i in range(3)]
    csv_path = tmp_path / "devices.csv"
    rows = ["port,device_id,wifi_ssid,wifi_password,server"]
    rows += [
        "%s,node-%d,bench,%s,mqtt://h:1883" % (b.port, i, PASSWORD) for i, b in enumerate(boards)
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    record = tmp_path / "record.jsonl"
    result = nbk(
        "--json",
        "provision",
        "--batch",
        str(csv_path),
        "--register",
        registration_service.url,
        "--record",
        str(record),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout, (result.output, result.stderr, csv_path.read_text())
    report = json.loads(result.stdout)
    assert report["failed"] == 0 and len(report["boards"]) == 3
    ids = {read_config(b)["device_id"] for b in boards}
    assert len(ids) == 3 and all(i.startswith("ESP32-") for i in ids)
    assert [read_config(b)["network"]["password"] for b in boards] == [PASSWORD] * 3
    for secret in (PASSWORD, registration_service.API_KEY, registration_service.TOKEN):
        assert secret not in result.output and secret not in record.read_text()
    assert len(read_record(record)) == 3


def test_batch_with_a_missing_board_reports_it_and_exits_1(board_factory, tmp_path):
    board = board_factory("ok")
    csv_path = tmp_path / "devices.csv"
    csv_path.write_text(
        "port,device_id,wifi_ssid,wifi_password,server\n"
        "%s,good,bench,bench-pass-1,mqtt://h:1883\n%s,bad,bench,bench-pass-1,mqtt://h:1883\n"
        % (board.port, tmp_path / "ttyGONE")
    )
    record = tmp_path / "record.jsonl"
    result = nbk("--json", "provision", "--batch", str(csv_path), "--record", str(record))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [b["status"] for b in report["boards"]] == ["ok", "failed"]
    assert "no serial port at" in report["boards"][1]["error"]
    lines = read_record(record)
    assert [line["status"] for line in lines] == ["ok", "failed"]
    # The failed line says what was asked for, so the technician can redo that row.
    assert (lines[1]["device_id"], lines[1]["ssid"], lines[1]["server"]) == (
        "bad",
        "bench",
        "mqtt://h:1883",
    )
    assert "bench-pass-1" not in record.read_text() and "bench-pass-1" not in result.output


def test_batch_csv_errors_name_the_line_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("port,device_id,wifi_ssid,server\n")
    with pytest.raises(NbkError, match="lacks column"):
        read_batch(str(path))
    path.write_text(
        "port,device_id,wifi_ssid,wifi_password,server\n/dev/a,x,,bench-pass-1,mqtt://h\n"
    )
    with pytest.raises(NbkError, match="line 2: wifi_ssid is empty"):
        read_batch(str(path))
    path.write_text(
        "port,device_id,wifi_ssid,wifi_password,server\n"
        "/dev/a,x,s,bench-pass-1,mqtt://h\n/dev/a,y,s,bench-pass-1,mqtt://h\n"
    )
    with pytest.raises(NbkError, match="port /dev/a more than once"):
        read_batch(str(path))


def test_bad_values_are_refused_before_touching_the_board():
    with pytest.raises(NbkError, match="device id 'has space'"):
        build_config("has space", "s", PASSWORD, "mqtt://h")
    with pytest.raises(NbkError, match="not a URL"):
        build_config("ok", "s", PASSWORD, "10.0.0.2")
    shown = masked(build_config("ok", "s", PASSWORD, "mqtt://h", api_key="k"))
    assert shown["network"]["password"] == "***" and shown["uplink"]["api_key"] == "***"


def test_wifi_password_and_ssid_follow_802_11_and_are_never_quoted():
    for bad, words in (
        ("short77", "has 7 characters; WPA2 needs 8 to 63"),
        ("L" * 64, "has 64 characters"),  # 64 characters must be hex: a raw key
        ("pass\u00e9word", "outside printable ASCII"),
    ):
        with pytest.raises(NbkError) as caught:
            build_config("n1", "bench", bad, "mqtt://h")
        assert words in str(caught.value) and bad not in str(caught.value)
    for good in ("", "8chars!!", "x" * 63, "0123456789abcdefABCDEF" * 2 + "0" * 20):
        assert build_config("n1", "bench", good, "mqtt://h")["network"]["password"] == good
    with pytest.raises(NbkError, match="SSID is 33 bytes"):
        build_config("n1", "s" * 33, PASSWORD, "mqtt://h")


def test_a_bad_password_is_refused_before_registering(registration_service):
    with pytest.raises(NbkError, match="WPA2 needs 8 to 63"):
        provision(None, "n5", "bench", "short", "mqtt://h:1883", registration_service.url)
    assert registration_service.requests == []


def test_missing_password_without_a_terminal_is_an_error(virtual_board, tmp_path):
    result = nbk(
        "provision",
        "--port",
        virtual_board.port,
        "--device-id",
        "n",
        "--wifi-ssid",
        "s",
        "--server",
        "mqtt://h",
        "--record",
        str(tmp_path / "r.jsonl"),
    )
    assert result.exit_code == 1 and "NBK_WIFI_PASSWORD" in said(result)


class CorruptingBoard(Transport):
    """A board whose flash returns a different config than was written."""

    def __init__(self):
        super().__init__()
        self.written = {}

    def write_files(self, items, chunk=4096, progress=None, timeout=30.0):
        self.written.update(items)
        return sum(len(d) for _, d in items)

    def exec_code(self, code, timeout=10.0):
        return b""

    def read_file(self, path, timeout=10.0):
        return self.written[path].replace(b"bench", b"bxnch")

    def close(self):
        pass


def test_a_read_back_that_differs_is_a_device_error():
    with pytest.raises(DeviceError) as caught:
        provision(CorruptingBoard(), "n1", "bench", PASSWORD, "mqtt://h:1883")
    assert "differs from what was written" in str(caught.value)
    assert caught.value.exit_code == 3
    assert PASSWORD not in str(caught.value)
