//! Crash tests re-execute their own test binary as a child, read its stdout line by
//! line, and SIGKILL it at a chosen moment.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the test `test` of this binary with `envs`, SIGKILLs it `kill_after` past the
/// line ending in `OPEN` it prints (at most 30 s after start), and returns every line
/// it printed. Panics if it never printed `OPEN`.
pub fn run_until_killed(test: &str, envs: &[(&str, String)], kill_after: Duration) -> Vec<String> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut deadline = None;
    let mut lines = Vec::new();
    loop {
        let until = deadline.unwrap_or(give_up);
        let Ok(line) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) else {
            break;
        };
        if deadline.is_none() && line.ends_with("OPEN") {
            deadline = Some(Instant::now() + kill_after);
        }
        lines.push(line);
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert!(deadline.is_some(), "the child never opened: {lines:?}");
    lines
}
