//! Shared test helpers.

#![allow(dead_code, unreachable_pub)]

pub mod modbus;
pub mod modbus_rtu;
pub mod opcua;

/// The python of `IIOT_PYTHON` when it can import `module`, or `None` with the reason
/// printed (a failure when `IIOT_REQUIRE_SERVICES=1`); `peer` names the test's peer.
pub fn python_with(module: &str, peer: &str) -> Option<String> {
    use std::process::{Command, Stdio};
    let required = std::env::var("IIOT_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "IIOT_REQUIRE_SERVICES=1 but {why}");
        eprintln!("skipping {peer} interop test: {why}");
        None
    };
    let Ok(py) = std::env::var("IIOT_PYTHON") else {
        return skip("IIOT_PYTHON is not set (see .ci/run)".into());
    };
    match Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Some(py),
        Ok(s) => skip(format!("{py} cannot import {module} ({s})")),
        Err(e) => skip(format!("cannot run {py}: {e}")),
    }
}

/// A free port on 127.0.0.1 (for a peer process to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills a peer process by pid when dropped, also when the test fails.
pub struct PeerGuard(pub std::process::Child);

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
