//! An in-memory RS-485 bus for RTU tests: slaves answer from a [`Simulator`]; a slave can
//! be dead (never answers) or answer with a broken CRC. Every request frame is recorded.

#![allow(dead_code, unreachable_pub)]

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iiot_protocols::modbus::sim::Simulator;
use iiot_protocols::modbus::{BoxedConnect, ExceptionCode, FnConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_modbus::{Request, Response};

/// Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[derive(Default)]
pub struct BusFaults {
    pub dead: HashSet<u8>,
    pub bad_crc: HashSet<u8>,
    pub frames: Vec<Vec<u8>>,
}

pub struct RtuBus {
    pub faults: Arc<Mutex<BusFaults>>,
    streams: mpsc::Sender<DuplexStream>,
}

impl RtuBus {
    /// Starts the bus task serving `sim`.
    pub fn start(sim: Simulator) -> Self {
        let faults = Arc::new(Mutex::new(BusFaults::default()));
        let (tx, mut rx) = mpsc::channel::<DuplexStream>(4);
        let f = faults.clone();
        tokio::spawn(async move {
            while let Some(stream) = rx.recv().await {
                serve(stream, &sim, &f).await;
            }
        });
        Self {
            faults,
            streams: tx,
        }
    }

    /// Serves the slaves on any byte stream (a pty end, a socket) in a task.
    pub fn serve_on<S>(sim: Simulator, stream: S) -> Arc<Mutex<BusFaults>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let faults = Arc::new(Mutex::new(BusFaults::default()));
        let f = faults.clone();
        tokio::spawn(async move { serve(stream, &sim, &f).await });
        faults
    }

    /// A bus connector: every connect gets a fresh in-memory line to the slaves.
    pub fn connector(
        &self,
        inter_frame: Duration,
    ) -> FnConnector<impl FnMut() -> BoxedConnect + Send + 'static> {
        let tx = self.streams.clone();
        FnConnector::bus(
            move || -> BoxedConnect {
                let tx = tx.clone();
                Box::pin(async move {
                    let (client, slave) = tokio::io::duplex(4096);
                    tx.send(slave)
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
                    Ok(tokio_modbus::client::rtu::attach(client))
                })
            },
            inter_frame,
        )
    }
}

fn frame_len(buf: &[u8]) -> Option<usize> {
    let fc = *buf.get(1)?;
    match fc {
        1..=6 => Some(8),
        15 | 16 => Some(9 + usize::from(*buf.get(6)?)),
        _ => Some(buf.len().max(4)),
    }
}

async fn serve<S>(mut stream: S, sim: &Simulator, faults: &Arc<Mutex<BusFaults>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = frame_len(&buf) {
            if buf.len() < len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..len).collect();
            let (body, crc) = frame.split_at(len - 2);
            if crc16(body).to_le_bytes() != [crc[0], crc[1]] {
                continue;
            }
            let unit = body[0];
            let (dead, bad_crc) = {
                let mut f = faults.lock().unwrap();
                f.frames.push(frame.clone());
                (f.dead.contains(&unit), f.bad_crc.contains(&unit))
            };
            if dead {
                continue;
            }
            let mut out = respond(sim, body);
            let mut c = crc16(&out).to_le_bytes();
            if bad_crc {
                c[0] ^= 0xFF;
            }
            out.extend_from_slice(&c);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

fn be(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn respond(sim: &Simulator, body: &[u8]) -> Vec<u8> {
    let (unit, fc) = (body[0], body[1]);
    let req = match fc {
        1 => Request::ReadCoils(be(body, 2), be(body, 4)),
        2 => Request::ReadDiscreteInputs(be(body, 2), be(body, 4)),
        3 => Request::ReadHoldingRegisters(be(body, 2), be(body, 4)),
        4 => Request::ReadInputRegisters(be(body, 2), be(body, 4)),
        5 => Request::WriteSingleCoil(be(body, 2), be(body, 4) == 0xFF00),
        6 => Request::WriteSingleRegister(be(body, 2), be(body, 4)),
        15 => {
            let n = usize::from(be(body, 4));
            let bits = (0..n)
                .map(|i| body[7 + i / 8] >> (i % 8) & 1 == 1)
                .collect();
            Request::WriteMultipleCoils(be(body, 2), Cow::Owned(bits))
        }
        16 => {
            let n = usize::from(be(body, 4));
            let words = (0..n).map(|i| be(body, 7 + 2 * i)).collect();
            Request::WriteMultipleRegisters(be(body, 2), Cow::Owned(words))
        }
        _ => return vec![unit, fc | 0x80, 0x01],
    };
    let mut out = vec![unit, fc];
    match sim.process(unit, &req) {
        Err(e) => return vec![unit, fc | 0x80, ExceptionCode::code(e)],
        Ok(Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits)) => {
            let mut bytes = vec![0u8; bits.len().div_ceil(8)];
            for (i, b) in bits.iter().enumerate() {
                if *b {
                    bytes[i / 8] |= 1 << (i % 8);
                }
            }
            out.push(bytes.len() as u8);
            out.extend(bytes);
        }
        Ok(Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w)) => {
            out.push((w.len() * 2) as u8);
            for x in w {
                out.extend(x.to_be_bytes());
            }
        }
        Ok(_) => out.extend_from_slice(&body[2..6]),
    }
    out
}
