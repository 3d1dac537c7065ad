"""Ask a board what it is, reset it, or hand the console to mpremote's REPL."""

from __future__ import annotations

import ast
import sys
from typing import Any

from nbk.errors import DeviceError
from nbk.mpy import decode_sys_mpy
from nbk.transport.base import DeviceExecError, Transport

# One exec; every optional fact sits in its own try so a port without `machine` (the Unix port)
# or without a config still answers. Prints one repr()'d dict.
_INFO = """\
import sys,os,gc
d={'implementation':sys.implementation.name,
 'version':'.'.join(str(v) for v in sys.implementation.version[:3]),
 'mpy':getattr(sys.implementation,'_mpy',None),'platform':sys.platform,
 'machine':getattr(sys.implementation,'_machine',None)}
gc.collect()
d['mem_free']=gc.mem_free();d['mem_alloc']=gc.mem_alloc()
try:
 s=os.statvfs('.');d['fs_total']=s[0]*s[2];d['fs_free']=s[0]*s[3]
except Exception:pass
try:
 import machine,binascii
 d['unique_id']=binascii.hexlify(machine.unique_id()).decode()
 d['freq_hz']=machine.freq()
except Exception:pass
try:
 import json
 with open('config.json') as f:d['device_id']=json.load(f).get('device_id')
except Exception:d['device_id']=None
try:
 import json
 with open('.nbk-deploy.json') as f:d['deployed']=json.load(f).get('roots')
except Exception:d['deployed']=None
print(repr(d))
del d
"""


def describe_mpy(value: int | None) -> dict[str, str | None]:
    """`sys.implementation._mpy` -> {"mpy": "6.3", "arch": "xtensawin"} (None when absent)."""
    if value is None:
        return {"mpy": None, "arch": None}
    major, sub, arch = decode_sys_mpy(value)
    return {"mpy": "%d.%d" % (major, sub), "arch": arch}


def info(transport: Transport) -> dict[str, Any]:
    """What the board reports about itself, as a dict (JSON-ready)."""
    facts = _parse_dict(transport.exec_code(_INFO))
    facts.update(describe_mpy(facts.pop("mpy", None)))
    return facts


def _parse_dict(out: bytes) -> dict[str, Any]:
    text = out.decode(errors="replace").strip()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict):
        raise DeviceError(
            "board answered %r instead of its facts; is it running MicroPython?" % text[:80]
        )
    return value


def reset(transport: Any, hard: bool = False, timeout: float = 5.0) -> dict[str, Any]:
    """Reset the board. Soft: Ctrl-D at the friendly REPL (state lost, files kept, boot.py and
    main.py run again). Hard: machine.reset(), as the reset button. Returns what was seen."""
    if hard:
        try:
            transport.exec_code(
                "import machine\nif not hasattr(machine,'reset'):raise OSError('no machine.reset')"
            )
        except DeviceExecError:
            raise DeviceError(
                "this board has no machine.reset (the virtual board?); use a soft reset "
                "(drop --hard) or press the reset button"
            ) from None
        transport.exec_no_wait("import machine\nmachine.reset()")
        return {"reset": "hard", "confirmed": False}
    banner = transport.soft_reset(timeout=timeout)
    confirmed = b"soft reboot" in banner
    if not confirmed:
        raise DeviceError(
            "board did not report a soft reboot within %.0fs; check `nbk monitor` or press reset"
            % timeout
        )
    return {"reset": "soft", "confirmed": True}


def shell_command(port: str) -> list[str]:
    """The command that opens mpremote's interactive REPL on `port` without a soft reset."""
    return [sys.executable, "-m", "mpremote", "connect", port, "resume", "repl"]
