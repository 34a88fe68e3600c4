//! SIGKILL while commands execute (issue 16): a child gateway takes commands
//! (some delivered twice) whose handler prints `CALL <id>` as it starts acting and
//! then takes a moment. The parent SIGKILLs it at a random moment, restarts the
//! executor on the same stores, delivers every command again and checks: no id
//! was ever handed to a handler twice (across both runs), a command that was
//! executing when the child died is reported `Interrupted` and never called
//! again, and every command ends in a final state.
//!
//! The child is this test binary re-executed with `IIOT_COMMAND_CHILD` set.

#![allow(clippy::many_single_char_names, clippy::similar_names)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::commands::{Handler, command, rig};
use iiot_core::command::{Action, CommandHandler, HandlerError, Target, ValueKind};
use iiot_core::types::{Command, CommandState, MessageId, TagPath, Value};
use iiot_edge::commands::{CommandConfig, LedgerConfig};
use rand::Rng;

const CHILD_ENV: &str = "IIOT_COMMAND_CHILD";
const TRIALS: u64 = 100;
const PER_TRIAL: u128 = 12;

fn commands(trial: u64) -> Vec<Command> {
    (0..PER_TRIAL)
        .map(|i| {
            let mut c = command(
                u128::from(trial) * 1000 + i,
                &format!("t{}", i % 4),
                i as f64,
                Duration::from_millis((PER_TRIAL - i) as u64),
                Duration::from_secs(600),
            );
            // One id per (trial, i), stable across the two processes.
            c.id = MessageId::from_parts(1_800_000_000_000 + trial, i);
            c
        })
        .collect()
}

/// Prints `CALL <id>` as it starts acting, then acts for up to 3 ms.
#[derive(Clone)]
struct Printing;

impl CommandHandler for Printing {
    fn target(&self, tag: &TagPath) -> Option<Target> {
        tag.as_str()
            .starts_with('t')
            .then(|| Target::writable(ValueKind::Number))
    }
    async fn execute(&self, a: Action) -> Result<Option<Value>, HandlerError> {
        println!("CALL {}", a.command);
        let us = rand::rng().random_range(0..3000);
        tokio::time::sleep(Duration::from_micros(us)).await;
        Ok(None)
    }
}

fn config() -> CommandConfig {
    CommandConfig {
        rate_limit: None,
        ..CommandConfig::default()
    }
}

/// The child. Does nothing as a normal test.
#[test]
fn command_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let trial: u64 = std::env::var("IIOT_COMMAND_TRIAL")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = std::path::PathBuf::from(dir);
        let r = common::commands::rig_with(&dir, Printing, config(), LedgerConfig::default()).await;
        println!("OPEN");
        for (i, c) in commands(trial).iter().enumerate() {
            r.send(c).await;
            if i % 3 == 0 {
                r.send(c).await;
            }
        }
        println!("SENT");
        std::future::pending::<()>().await;
    });
}

fn run_child(dir: &std::path::Path, trial: u64, kill_after: Duration) -> Vec<String> {
    common::child::run_until_killed(
        "command_child",
        &[
            (CHILD_ENV, dir.display().to_string()),
            ("IIOT_COMMAND_TRIAL", trial.to_string()),
        ],
        kill_after,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_executing_never_runs_a_command_twice() {
    let mut rng = rand::rng();
    let mut interrupted = 0;
    let mut killed_mid_run = 0;
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().unwrap();
        let kill_after = Duration::from_micros(rng.random_range(0..40_000));
        let lines = run_child(dir.path(), trial, kill_after);
        let first: Vec<String> = lines
            .iter()
            .filter_map(|l| l.split("CALL ").nth(1).map(str::to_owned))
            .collect();
        let unique: HashSet<_> = first.iter().collect();
        assert_eq!(
            unique.len(),
            first.len(),
            "trial {trial}: a call repeated in one run: {first:?}"
        );
        if !lines.iter().any(|l| l.ends_with("SENT")) {
            killed_mid_run += 1;
        }
        // Restart on the same stores; deliver everything again.
        let h = Handler::default();
        let r = rig(dir.path(), h.clone(), config(), LedgerConfig::default()).await;
        let all = commands(trial);
        for c in &all {
            r.send(c).await;
        }
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut states = HashMap::new();
        while states.len() < all.len() {
            for c in &all {
                if let Some(s) = r.ledger.state_of(c.id).unwrap().filter(|s| s.is_terminal()) {
                    states.insert(c.id, s);
                }
            }
            assert!(
                Instant::now() < give_up,
                "trial {trial}: not all final: {states:?}"
            );
            tokio::task::yield_now().await;
        }
        let second: Vec<MessageId> = h.calls.lock().unwrap().iter().map(|a| a.command).collect();
        let second_set: HashSet<String> = second.iter().map(ToString::to_string).collect();
        assert_eq!(
            second_set.len(),
            second.len(),
            "trial {trial}: a call repeated after restart"
        );
        for id in &first {
            assert!(
                !second_set.contains(id),
                "trial {trial}: {id} called again after the restart"
            );
        }
        for c in &all {
            let s = states[&c.id];
            let called_before = first.contains(&c.id.to_string());
            match s {
                CommandState::Interrupted => {
                    interrupted += 1;
                    assert!(!second_set.contains(&c.id.to_string()));
                }
                CommandState::Completed => {
                    assert!(
                        called_before || second_set.contains(&c.id.to_string()),
                        "trial {trial}: completed without a call"
                    );
                }
                other => panic!("trial {trial}: {} ended {other:?}", c.id),
            }
            if called_before {
                assert!(matches!(
                    s,
                    CommandState::Completed | CommandState::Interrupted
                ));
            }
        }
        r.stop().await;
    }
    println!(
        "{TRIALS} trials: {killed_mid_run} killed before all were sent, {interrupted} interrupted"
    );
    assert!(
        killed_mid_run > 0,
        "no kill landed while commands were coming in"
    );
    assert!(interrupted > 0, "no kill landed during a handler call");
}
