//! A map-driven Modbus TCP simulator (a tokio-modbus server) with value generators and
//! fault injection, for tests and the reference deployment's simulated PLC.
//!
//! Every tag of the map gets storage in its unit's area; values are set with
//! [`Simulator::set_value`] (encoded with the same codec the poller decodes with) or
//! driven by a [`Generator`]. Faults per unit: [`Fault::Delay`], [`Fault::Exception`],
//! [`Fault::NoResponse`], [`Fault::DropConnection`].
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use iiot_protocols::modbus::{RegisterMap, sim::Simulator};
//! use tokio_util::sync::CancellationToken;
//!
//! let map = RegisterMap::default();
//! let sim = Simulator::new(map);
//! let server = sim.bind("127.0.0.1:0".parse().unwrap()).await?;
//! println!("listening on {}", server.local_addr()?);
//! let cancel = CancellationToken::new();
//! tokio::spawn(server.run(cancel.clone()));
//! # Ok(()) }
//! ```

mod generator;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use iiot_core::types::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_modbus::{Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

pub use generator::Generator;

use super::codec::{CodecError, decode_registers, encode_registers};
use super::error::ExceptionCode;
use super::map::{Area, DataType, RegisterMap};

/// A fault the simulator injects for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer after this delay.
    Delay(Duration),
    /// Answer every request with this exception.
    Exception(ExceptionCode),
    /// Never answer (a dead slave).
    NoResponse,
    /// Close the connection instead of answering.
    DropConnection,
}

/// Why a simulator call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No tag of that name.
    #[error("unknown tag {tag:?}")]
    UnknownTag {
        /// The name.
        tag: String,
    },
    /// The value does not encode for the tag.
    #[error("tag {tag:?}: {source}")]
    Encode {
        /// The tag.
        tag: String,
        /// Why.
        source: CodecError,
    },
}

#[derive(Debug, Default)]
struct Bank {
    bits: BTreeMap<(Area, u16), bool>,
    words: BTreeMap<(Area, u16), u16>,
}

#[derive(Debug, Default)]
struct State {
    banks: HashMap<u8, Bank>,
    faults: HashMap<u8, Fault>,
    all_fault: Option<Fault>,
    generators: BTreeMap<usize, generator::Running>,
    strict: bool,
    max_read: Option<u16>,
}

#[derive(Debug)]
struct Shared {
    map: RegisterMap,
    state: Mutex<State>,
    requests: AtomicU64,
    writes: AtomicU64,
}

/// The simulator: a cloneable handle to its registers, generators and faults.
#[derive(Debug, Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// A simulator serving every tag of `map`, all values zero.
    pub fn new(map: RegisterMap) -> Self {
        let mut state = State::default();
        for t in map.tags() {
            let bank = state.banks.entry(t.unit_id).or_default();
            for a in addresses(t.address, usize::from(t.width)) {
                if t.area.is_bits() {
                    bank.bits.insert((t.area, a), false);
                } else {
                    bank.words.insert((t.area, a), 0);
                }
            }
        }
        Self {
            shared: Arc::new(Shared {
                map,
                state: Mutex::new(state),
                requests: AtomicU64::new(0),
                writes: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the data stays usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Strict addressing: reading any address no tag covers answers "illegal data
    /// address" (like a device with holes in its map). Off by default (holes read 0).
    pub fn set_strict(&self, strict: bool) -> &Self {
        self.state().strict = strict;
        self
    }

    /// Refuses reads of more than `max` items with "illegal data value" (like a device
    /// with a smaller request limit than the protocol's).
    pub fn set_max_read(&self, max: Option<u16>) -> &Self {
        self.state().max_read = max;
        self
    }

    /// Injects (or with `None` clears) a fault for one unit.
    pub fn set_fault(&self, unit: u8, fault: Option<Fault>) -> &Self {
        let mut s = self.state();
        match fault {
            Some(f) => s.faults.insert(unit, f),
            None => s.faults.remove(&unit),
        };
        self
    }

    /// Injects (or clears) a fault for every unit.
    pub fn set_fault_all(&self, fault: Option<Fault>) -> &Self {
        self.state().all_fault = fault;
        self
    }

    /// Requests served so far (every request, answered or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Write requests (FC5, FC6, FC15, FC16) served so far, answered or refused:
    /// what a test compares with the commands it expects to have acted.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Sets a tag's value, encoded through the map.
    ///
    /// # Errors
    /// [`SimError`] when the tag is unknown or the value does not encode.
    pub fn set_value(&self, tag: &str, value: &Value) -> Result<(), SimError> {
        let mut s = self.state();
        self.write_tag(&mut s, tag, value)
    }

    fn write_tag(&self, s: &mut State, name: &str, value: &Value) -> Result<(), SimError> {
        let (_, t) = self
            .shared
            .map
            .find(name)
            .ok_or_else(|| SimError::UnknownTag {
                tag: name.to_owned(),
            })?;
        let words = encode_registers(t, value).map_err(|source| SimError::Encode {
            tag: name.to_owned(),
            source,
        })?;
        let bank = s.banks.entry(t.unit_id).or_default();
        if t.area.is_bits() {
            bank.bits
                .insert((t.area, t.address), words.first().is_some_and(|w| *w != 0));
        } else if t.data_type == DataType::Bit {
            let mask = 1u16 << (t.bit & 15);
            let w = bank.words.entry((t.area, t.address)).or_default();
            *w = if words.first().is_some_and(|x| *x != 0) {
                *w | mask
            } else {
                *w & !mask
            };
        } else {
            for (a, w) in addresses(t.address, words.len()).zip(words) {
                bank.words.insert((t.area, a), w);
            }
        }
        Ok(())
    }

    /// A tag's current value, decoded through the map.
    pub fn value(&self, name: &str) -> Option<Value> {
        let (_, t) = self.shared.map.find(name)?;
        let s = self.state();
        let bank = s.banks.get(&t.unit_id)?;
        if t.area.is_bits() {
            return bank.bits.get(&(t.area, t.address)).map(|b| Value::Bool(*b));
        }
        let words: Vec<u16> = addresses(t.address, usize::from(t.width))
            .map(|a| bank.words.get(&(t.area, a)).copied().unwrap_or(0))
            .collect();
        decode_registers(t, &words).ok()
    }

    /// Drives a tag with a generator (replacing any earlier one).
    ///
    /// # Errors
    /// [`SimError::UnknownTag`].
    pub fn set_generator(&self, name: &str, generator: Generator) -> Result<(), SimError> {
        let (i, _) = self
            .shared
            .map
            .find(name)
            .ok_or_else(|| SimError::UnknownTag {
                tag: name.to_owned(),
            })?;
        let running = generator::Running::new(generator);
        let v = running.value();
        let mut s = self.state();
        s.generators.insert(i, running);
        self.write_tag(&mut s, name, &v)
    }

    /// Advances every generator by one tick of `dt` and stores the new values. Values
    /// that do not encode (out of the tag's range) are skipped.
    pub fn tick(&self, dt: Duration) {
        let mut s = self.state();
        let mut updates = Vec::new();
        for (i, g) in &mut s.generators {
            g.tick(dt);
            if let Some(t) = self.shared.map.tags().get(*i) {
                updates.push((t.name.to_string(), g.value()));
            }
        }
        for (name, v) in updates {
            if let Err(e) = self.write_tag(&mut s, &name, &v) {
                tracing::trace!(%e, "generator value skipped");
            }
        }
    }

    /// Answers one request as the device would (without faults).
    ///
    /// # Errors
    /// The exception the device answers with.
    pub fn process(&self, unit: u8, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(
            request,
            Request::WriteSingleCoil(..)
                | Request::WriteMultipleCoils(..)
                | Request::WriteSingleRegister(..)
                | Request::WriteMultipleRegisters(..)
        ) {
            self.shared.writes.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = self.state();
        let (strict, max_read) = (s.strict, s.max_read);
        let bank = s.banks.entry(unit).or_default();
        let read_words = |bank: &Bank, area: Area, addr: u16, cnt: u16| {
            check_read(area, cnt, max_read)?;
            (0..cnt)
                .map(|i| {
                    let a = addr
                        .checked_add(i)
                        .ok_or(ExceptionCode::IllegalDataAddress)?;
                    match bank.words.get(&(area, a)) {
                        Some(w) => Ok(*w),
                        None if !strict => Ok(0),
                        None => Err(ExceptionCode::IllegalDataAddress),
                    }
                })
                .collect::<Result<Vec<u16>, _>>()
        };
        let read_bits = |bank: &Bank, area: Area, addr: u16, cnt: u16| {
            check_read(area, cnt, max_read)?;
            (0..cnt)
                .map(|i| {
                    let a = addr
                        .checked_add(i)
                        .ok_or(ExceptionCode::IllegalDataAddress)?;
                    match bank.bits.get(&(area, a)) {
                        Some(b) => Ok(*b),
                        None if !strict => Ok(false),
                        None => Err(ExceptionCode::IllegalDataAddress),
                    }
                })
                .collect::<Result<Vec<bool>, _>>()
        };
        match request {
            Request::ReadCoils(a, n) => {
                read_bits(bank, Area::Coil, *a, *n).map(Response::ReadCoils)
            }
            Request::ReadDiscreteInputs(a, n) => {
                read_bits(bank, Area::DiscreteInput, *a, *n).map(Response::ReadDiscreteInputs)
            }
            Request::ReadInputRegisters(a, n) => {
                read_words(bank, Area::InputRegister, *a, *n).map(Response::ReadInputRegisters)
            }
            Request::ReadHoldingRegisters(a, n) => {
                read_words(bank, Area::HoldingRegister, *a, *n).map(Response::ReadHoldingRegisters)
            }
            Request::WriteSingleCoil(a, v) => {
                write_bits(bank, strict, *a, &[*v])?;
                Ok(Response::WriteSingleCoil(*a, *v))
            }
            Request::WriteMultipleCoils(a, vs) => {
                write_bits(bank, strict, *a, vs)?;
                Ok(Response::WriteMultipleCoils(*a, vs.len() as u16))
            }
            Request::WriteSingleRegister(a, v) => {
                write_words(bank, strict, *a, &[*v])?;
                Ok(Response::WriteSingleRegister(*a, *v))
            }
            Request::WriteMultipleRegisters(a, vs) => {
                write_words(bank, strict, *a, vs)?;
                Ok(Response::WriteMultipleRegisters(*a, vs.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn fault(&self, unit: u8) -> Option<Fault> {
        let s = self.state();
        s.faults.get(&unit).copied().or(s.all_fault)
    }

    /// Binds the TCP server (use port 0 for a free port).
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(&self, addr: SocketAddr) -> io::Result<SimServer> {
        Ok(SimServer {
            listener: TcpListener::bind(addr).await?,
            sim: self.clone(),
            tick: Duration::from_millis(100),
        })
    }
}

fn check_read(area: Area, cnt: u16, max_read: Option<u16>) -> Result<(), ExceptionCode> {
    if cnt == 0 || cnt > area.max_read() {
        return Err(ExceptionCode::IllegalDataValue);
    }
    if max_read.is_some_and(|m| cnt > m) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    Ok(())
}

/// `len` addresses from `start`, stopping at 65535 (never overflowing).
fn addresses(start: u16, len: usize) -> impl Iterator<Item = u16> {
    (u32::from(start)..u32::from(start) + len as u32).map_while(|a| u16::try_from(a).ok())
}

fn fits(addr: u16, len: usize) -> Result<(), ExceptionCode> {
    if usize::from(addr) + len > 65_536 {
        Err(ExceptionCode::IllegalDataAddress)
    } else {
        Ok(())
    }
}

fn write_bits(bank: &mut Bank, strict: bool, addr: u16, vs: &[bool]) -> Result<(), ExceptionCode> {
    fits(addr, vs.len())?;
    for (a, v) in addresses(addr, vs.len()).zip(vs) {
        let key = (Area::Coil, a);
        if strict && !bank.bits.contains_key(&key) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        bank.bits.insert(key, *v);
    }
    Ok(())
}

fn write_words(bank: &mut Bank, strict: bool, addr: u16, vs: &[u16]) -> Result<(), ExceptionCode> {
    fits(addr, vs.len())?;
    for (a, v) in addresses(addr, vs.len()).zip(vs) {
        let key = (Area::HoldingRegister, a);
        if strict && !bank.words.contains_key(&key) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        bank.words.insert(key, *v);
    }
    Ok(())
}

/// The bound TCP server of a [`Simulator`].
#[derive(Debug)]
pub struct SimServer {
    listener: TcpListener,
    sim: Simulator,
    tick: Duration,
}

impl SimServer {
    /// The address it listens on.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Sets how often generators tick (default 100 ms).
    pub fn set_tick(&mut self, tick: Duration) -> &mut Self {
        self.tick = tick;
        self
    }

    /// Serves until `cancel` fires; open connections close with it.
    ///
    /// # Errors
    /// An accept error of the listener.
    pub async fn run(self, cancel: CancellationToken) -> io::Result<()> {
        let SimServer {
            listener,
            sim,
            tick,
        } = self;
        let server = tokio_modbus::server::tcp::Server::new(listener);
        let on_connected = |stream: TcpStream, _addr: SocketAddr| {
            let kill = Arc::new(AtomicBool::new(false));
            let service = SimService {
                sim: sim.clone(),
                kill: kill.clone(),
            };
            let stream = SimStream {
                inner: stream,
                kill,
            };
            async move { Ok(Some((service, stream))) }
        };
        let ticker = {
            let sim = sim.clone();
            async move {
                let mut iv = tokio::time::interval(tick);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    iv.tick().await;
                    sim.tick(tick);
                }
            }
        };
        let serve = server.serve(
            &on_connected,
            |e| tracing::debug!(%e, "sim connection ended"),
        );
        let result = tokio::select! {
            r = serve => r,
            () = ticker => Ok(()),
            () = cancel.cancelled() => Ok(()),
        };
        result
    }
}

struct SimService {
    sim: Simulator,
    kill: Arc<AtomicBool>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Option<Response>, tokio_modbus::ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = tokio_modbus::ExceptionCode;
    type Future = ServiceFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = req.slave;
        let fault = self.sim.fault(unit);
        let result = self
            .sim
            .process(unit, &req.request)
            .map(Some)
            .map_err(tokio_modbus::ExceptionCode::from);
        let kill = self.kill.clone();
        Box::pin(async move {
            match fault {
                None => result,
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    result
                }
                Some(Fault::Exception(e)) => Err(e.into()),
                Some(Fault::NoResponse) => Ok(None),
                Some(Fault::DropConnection) => {
                    kill.store(true, Ordering::Relaxed);
                    result
                }
            }
        })
    }
}

/// A TCP stream that fails its next write once its connection is marked for dropping.
struct SimStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::map::{DataType, MapConfig, TagConfig};

    fn sim() -> Simulator {
        let map = RegisterMap::from_config(&MapConfig {
            poll_groups: BTreeMap::new(),
            tags: vec![
                TagConfig::new("top", Area::HoldingRegister, 65535, DataType::U16),
                TagConfig::new("coil", Area::Coil, 65535, DataType::Bool),
            ],
        })
        .unwrap();
        Simulator::new(map)
    }

    #[test]
    fn the_end_of_the_address_space_never_panics() {
        let s = sim();
        s.set_value("top", &Value::UInt(7)).unwrap();
        assert_eq!(s.value("top"), Some(Value::UInt(7)));
        let hr = |a, n| s.process(1, &Request::ReadHoldingRegisters(a, n));
        assert_eq!(hr(65535, 1), Ok(Response::ReadHoldingRegisters(vec![7])));
        assert_eq!(hr(65535, 2), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(hr(0, 0), Err(ExceptionCode::IllegalDataValue));
        assert_eq!(hr(0, 126), Err(ExceptionCode::IllegalDataValue));
        let w = |a, v: Vec<u16>| {
            s.process(
                1,
                &Request::WriteMultipleRegisters(a, std::borrow::Cow::Owned(v)),
            )
        };
        assert!(w(65535, vec![1]).is_ok());
        assert_eq!(w(65535, vec![1, 2]), Err(ExceptionCode::IllegalDataAddress));
        let c = |a, v: Vec<bool>| {
            s.process(
                1,
                &Request::WriteMultipleCoils(a, std::borrow::Cow::Owned(v)),
            )
        };
        assert!(c(65535, vec![true]).is_ok());
        assert_eq!(
            c(65534, vec![true; 3]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(s.value("coil"), Some(Value::Bool(true)));
        assert_eq!(
            s.process(1, &Request::ReportServerId),
            Err(ExceptionCode::IllegalFunction)
        );
    }

    #[test]
    fn strict_mode_and_max_read() {
        let s = sim();
        assert!(s.process(1, &Request::ReadHoldingRegisters(0, 2)).is_ok());
        s.set_strict(true);
        assert_eq!(
            s.process(1, &Request::ReadHoldingRegisters(0, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        s.set_strict(false).set_max_read(Some(4));
        assert_eq!(
            s.process(1, &Request::ReadHoldingRegisters(0, 5)),
            Err(ExceptionCode::IllegalDataValue)
        );
    }

    proptest::proptest! {
        /// Any request from the network gets an answer or an exception, never a panic.
        #[test]
        fn any_request_is_answered_without_panic(
            kind in 0u8..8,
            addr in proptest::prelude::any::<u16>(),
            cnt in proptest::prelude::any::<u16>(),
            n in 0usize..300,
            strict in proptest::prelude::any::<bool>(),
        ) {
            use std::borrow::Cow;
            let s = sim();
            s.set_strict(strict);
            let req = match kind {
                0 => Request::ReadCoils(addr, cnt),
                1 => Request::ReadDiscreteInputs(addr, cnt),
                2 => Request::ReadInputRegisters(addr, cnt),
                3 => Request::ReadHoldingRegisters(addr, cnt),
                4 => Request::WriteSingleCoil(addr, cnt & 1 == 1),
                5 => Request::WriteSingleRegister(addr, cnt),
                6 => Request::WriteMultipleCoils(addr, Cow::Owned(vec![true; n])),
                _ => Request::WriteMultipleRegisters(addr, Cow::Owned(vec![cnt; n])),
            };
            let _ = s.process(1, &req);
            let _ = s.process(200, &req);
        }
    }
}
