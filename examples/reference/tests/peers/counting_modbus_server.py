"""A pymodbus TCP server (pymodbus >= 3.8, for `trace_pdu`) that counts write requests, for the end-to-end command test
of the reference deployment (issue 16).

Serves 16 holding registers and 4 coils (all zero) on 127.0.0.1:PORT, unit id 1, and
prints one line per write request it serves, flushed at once:

    WRITE holding 3 1      (area, 0-based address, number of items)

so the test counts what the server itself saw, independently of the gateway's own
accounting. Prints "serving on 127.0.0.1:PORT" once it listens.

Usage: python counting_modbus_server.py PORT
"""

import asyncio
import sys


async def main(port):
    from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import StartAsyncTcpServer

    try:
        from pymodbus.datastore import ModbusDeviceContext as DeviceContext
    except ImportError:  # pymodbus < 3.10
        from pymodbus.datastore import ModbusSlaveContext as DeviceContext

    writes = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}

    def trace(sending, pdu):
        # Incoming requests only; one line per write request the server takes.
        area = writes.get(getattr(pdu, "function_code", None))
        if not sending and area is not None:
            n = max(len(pdu.registers or []), len(pdu.bits or []), 1)
            print(f"WRITE {area} {pdu.address} {n}", flush=True)
        return pdu

    device = DeviceContext(
        di=ModbusSequentialDataBlock(1, [False] * 4),
        co=ModbusSequentialDataBlock(1, [False] * 4),
        hr=ModbusSequentialDataBlock(1, [0] * 16),
        ir=ModbusSequentialDataBlock(1, [0] * 4),
    )
    try:
        context = ModbusServerContext(devices={1: device}, single=False)
    except TypeError:  # pymodbus < 3.10
        context = ModbusServerContext(slaves={1: device}, single=False)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await StartAsyncTcpServer(
        context=context, address=("127.0.0.1", port), trace_pdu=trace
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
