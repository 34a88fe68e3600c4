"""An asyncua OPC-UA server for the iiot-protocols OPC-UA interop tests and benchmark.

Listens on opc.tcp://127.0.0.1:PORT/ (that exact endpoint URL), security policy None
only, anonymous identity only. Prints "READY" on stdout once it listens (nothing else
goes to stdout; asyncua logs WARNING and above to stderr). Stops on SIGTERM/SIGINT.

Namespace "urn:iiot-test" is index 2. Address space, under Objects:

  ns=2;s=Plant                 folder
    ns=2;s=Plant.Bool          Boolean    True
    ns=2;s=Plant.SByte         SByte      -5
    ns=2;s=Plant.Byte          Byte       200
    ns=2;s=Plant.Int16         Int16      -1234
    ns=2;s=Plant.UInt16        UInt16     54321
    ns=2;s=Plant.Int32         Int32      -123456
    ns=2;s=Plant.UInt32        UInt32     4000000000
    ns=2;s=Plant.Int64         Int64      -9000000000000
    ns=2;s=Plant.UInt64        UInt64     18000000000000000000
    ns=2;s=Plant.Float         Float      1.5
    ns=2;s=Plant.Double        Double     2.25
    ns=2;s=Plant.String        String     "hello"
    ns=2;s=Plant.ByteString    ByteString 01 02 03
    ns=2;s=Plant.DateTime      DateTime   2026-01-02T03:04:05.123456Z
    ns=2;s=Plant.Array         Int32[3]   [1, 2, 3] (ValueRank 1)
    ns=2;s=Plant.Counter       UInt32     0, +1 every 100 ms with a fresh source timestamp
    ns=2;s=Plant.Broken        Double     status BadSensorFailure (0x808C0000); asyncua
                                          stores a bad-status value as null (Part 4 7.7.1)
    ns=2;s=Plant.Uncertain     Double     7.0, status UncertainLastUsableValue (0x40900000)
    ns=2;s=Plant.Setpoint      Double     10.0, writable by clients
    ns=2;s=Plant.Switch        Boolean    False, writable by clients
    ns=2;i=5001 (Numeric)      Int32      42

With --items N (default 0) also a folder ns=2;s=Bench holding Double variables
ns=2;s=Bench.0 .. ns=2;s=Bench.{N-1}; every 100 ms each gets tick + i * 0.001.
The variables' DataType is the exact variant type (SByte is SByte, not Int64).
Written values come with the server's source and server timestamps; asyncua's server
only reports a data change when a value is written, so a client's sampling interval
does not change what it sees.

Usage: python opcua_server.py PORT [--items N]
"""

import argparse
import asyncio
import logging
import signal
import sys
import time
from datetime import datetime, timezone

NAMESPACE = "urn:iiot-test"
TICK = 0.1


def plant_values(ua):
    V = ua.VariantType
    return [
        ("Bool", True, V.Boolean),
        ("SByte", -5, V.SByte),
        ("Byte", 200, V.Byte),
        ("Int16", -1234, V.Int16),
        ("UInt16", 54321, V.UInt16),
        ("Int32", -123456, V.Int32),
        ("UInt32", 4000000000, V.UInt32),
        ("Int64", -9000000000000, V.Int64),
        ("UInt64", 18000000000000000000, V.UInt64),
        ("Float", 1.5, V.Float),
        ("Double", 2.25, V.Double),
        ("String", "hello", V.String),
        ("ByteString", b"\x01\x02\x03", V.ByteString),
        ("DateTime", datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc), V.DateTime),
        ("Array", [1, 2, 3], V.Int32),
        ("Counter", 0, V.UInt32),
        ("Broken", 0.0, V.Double),
        ("Uncertain", 7.0, V.Double),
        ("Setpoint", 10.0, V.Double),
        ("Switch", False, V.Boolean),
    ]


async def main(port, items):
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_server_name("iiot-rs test peer")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    idx = await server.register_namespace(NAMESPACE)
    assert idx == 2, f"namespace {NAMESPACE} got index {idx}, expected 2"

    objects = server.nodes.objects
    plant = await objects.add_folder(ua.NodeId("Plant", idx), ua.QualifiedName("Plant", idx))
    nodes = {}
    for name, value, vtype in plant_values(ua):
        nodes[name] = await plant.add_variable(
            ua.NodeId(f"Plant.{name}", idx),
            ua.QualifiedName(name, idx),
            ua.Variant(value, vtype),
        )
    await nodes["Array"].write_value_rank(ua.ValueRank.OneDimension)
    await nodes["Array"].write_array_dimensions([3])
    await nodes["Setpoint"].set_writable()
    await nodes["Switch"].set_writable()
    await plant.add_variable(
        ua.NodeId(5001, idx), ua.QualifiedName("Numeric", idx), ua.Variant(42, ua.VariantType.Int32)
    )

    def dv(value, vtype, status=ua.StatusCodes.Good):
        now = datetime.now(timezone.utc)
        return ua.DataValue(
            ua.Variant(value, vtype),
            ua.StatusCode(status),
            SourceTimestamp=now,
            ServerTimestamp=now,
        )

    await server.write_attribute_value(
        nodes["Broken"].nodeid, dv(0.0, ua.VariantType.Double, ua.StatusCodes.BadSensorFailure)
    )
    await server.write_attribute_value(
        nodes["Uncertain"].nodeid, dv(7.0, ua.VariantType.Double, ua.StatusCodes.UncertainLastUsableValue)
    )

    bench = []
    if items:
        folder = await objects.add_folder(ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx))
        for i in range(items):
            node = await folder.add_variable(
                ua.NodeId(f"Bench.{i}", idx),
                ua.QualifiedName(f"Bench.{i}", idx),
                ua.Variant(0.0, ua.VariantType.Double),
            )
            bench.append(node.nodeid)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def ticker():
        counter_id = nodes["Counter"].nodeid
        write = server.write_attribute_value
        Variant, DataValue, Double = ua.Variant, ua.DataValue, ua.VariantType.Double
        tick = 0
        deadline = time.monotonic()
        while True:
            deadline += TICK
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:  # fell behind: skip the missed ticks instead of bursting
                deadline = time.monotonic()
            tick += 1
            await write(counter_id, dv(tick & 0xFFFFFFFF, ua.VariantType.UInt32))
            if bench:
                now = datetime.now(timezone.utc)
                for i, nodeid in enumerate(bench):
                    await write(
                        nodeid,
                        DataValue(Variant(tick + i * 0.001, Double), SourceTimestamp=now, ServerTimestamp=now),
                    )

    await server.start()
    task = asyncio.create_task(ticker())
    print("READY", flush=True)
    try:
        await stop.wait()
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="asyncua OPC-UA test server")
    p.add_argument("port", type=int)
    p.add_argument("--items", type=int, default=0, help="Double variables under ns=2;s=Bench")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    asyncio.run(main(args.port, args.items))
