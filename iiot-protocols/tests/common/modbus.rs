//! Helpers for the Modbus tests: a simulator on a free loopback port, stopped by a drop
//! guard, and waiting for readings with a deadline (never a fixed sleep).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use iiot_protocols::modbus::sim::Simulator;
use iiot_protocols::modbus::{Reading, RegisterMap};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A running simulator; dropping it stops the server.
pub struct SimGuard {
    pub sim: Simulator,
    pub addr: SocketAddr,
    _stop: DropGuard,
}

pub async fn start_sim(map: RegisterMap) -> SimGuard {
    let sim = Simulator::new(map);
    let server = sim.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(server.run(cancel.clone()));
    SimGuard {
        sim,
        addr,
        _stop: cancel.drop_guard(),
    }
}

/// Receives readings until one satisfies `pred`, or panics after `within`.
pub async fn wait_for(
    rx: &mut mpsc::Receiver<Reading>,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&Reading) -> bool,
) -> Reading {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) if pred(&r) => return r,
            Ok(Some(_)) => {}
            Ok(None) => panic!("reading channel closed while waiting for {what}"),
            Err(elapsed) => panic!("no reading for {what} within {within:?}: {elapsed}"),
        }
    }
}

/// A map from TOML text.
pub fn map(toml: &str) -> RegisterMap {
    RegisterMap::from_toml_str(toml).unwrap()
}
