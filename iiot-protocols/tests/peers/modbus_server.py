"""A pymodbus TCP server for the iiot-protocols Modbus interop test (issue 6).

Serves the same values in every 32-bit and 64-bit byte/word order on 127.0.0.1:PORT,
unit id 1. Register words are computed here with Python's struct module, independently
of the Rust codec. Layout (0-based holding registers unless noted):

  f32  123.456           at 0 ABCD, 2 CDAB, 4 BADC, 6 DCBA
  i32  -123456789        at 10, 12, 14, 16 (same order sequence)
  u32  3000000000        at 20, 22, 24, 26
  f64  -98765.4321       at 30 ABCDEFGH, 34 GHEFCDAB, 38 BADCFEHG, 42 HGFEDCBA
  i64  -1234567890123    at 50, 54, 58, 62
  u64  0x0123456789ABCDEF at 70, 74, 78, 82
  str  "pymodbus"        at 90 (AB), 94 (BA), 8 bytes
  input registers: u16 4242 at 0, i16 -42 at 1
  coils: 1, 0, 1 at 0..2; discrete inputs: 1 at 0

Usage: python modbus_server.py PORT
"""

import asyncio
import struct
import sys


def words(be_bytes, byte_swap, word_swap):
    ws = []
    for i in range(0, len(be_bytes), 2):
        hi, lo = be_bytes[i], be_bytes[i + 1]
        ws.append((lo << 8 | hi) if byte_swap else (hi << 8 | lo))
    if word_swap:
        ws.reverse()
    return ws


# (byte_swap, word_swap) for ABCD, CDAB, BADC, DCBA
ORDERS = [(False, False), (False, True), (True, False), (True, True)]


def layout():
    hr = [0] * 100

    def put(addr, vals):
        hr[addr:addr + len(vals)] = vals

    for i, (bs, ws) in enumerate(ORDERS):
        put(0 + 2 * i, words(struct.pack(">f", 123.456), bs, ws))
        put(10 + 2 * i, words(struct.pack(">i", -123456789), bs, ws))
        put(20 + 2 * i, words(struct.pack(">I", 3000000000), bs, ws))
        put(30 + 4 * i, words(struct.pack(">d", -98765.4321), bs, ws))
        put(50 + 4 * i, words(struct.pack(">q", -1234567890123), bs, ws))
        put(70 + 4 * i, words(struct.pack(">Q", 0x0123456789ABCDEF), bs, ws))
    put(90, words(b"pymodbus", False, False))
    put(94, words(b"pymodbus", True, False))
    ir = [4242, struct.unpack(">H", struct.pack(">h", -42))[0]]
    return hr, ir


async def main(port):
    from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import StartAsyncTcpServer

    try:
        from pymodbus.datastore import ModbusDeviceContext as DeviceContext
    except ImportError:  # pymodbus < 3.10
        from pymodbus.datastore import ModbusSlaveContext as DeviceContext

    hr, ir = layout()
    # Block address 1 is protocol address 0 in pymodbus's datastore.
    device = DeviceContext(
        di=ModbusSequentialDataBlock(1, [True, False]),
        co=ModbusSequentialDataBlock(1, [True, False, True]),
        hr=ModbusSequentialDataBlock(1, hr),
        ir=ModbusSequentialDataBlock(1, ir),
    )
    try:
        context = ModbusServerContext(devices={1: device}, single=False)
    except TypeError:  # pymodbus < 3.10
        context = ModbusServerContext(slaves={1: device}, single=False)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
