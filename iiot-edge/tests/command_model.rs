//! Model-based test of ledger + executor (issue 16): random deliveries of a small
//! set of commands (duplicates, any order, some expired on arrival, some whose
//! handler call fails), with restarts in between, against what must hold:
//! each id is handed to the handler at most once; every delivery gets an ack (at
//! least one: the control lane delivers at least once across a restart) and all
//! acks of an id agree with the ledger's final state; an expired
//! command never runs; on one target no command runs after a newer one.

#![allow(clippy::many_single_char_names, clippy::similar_names)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::commands::{Handler, Rig, command, rig};
use iiot_core::types::{Command, CommandAck, CommandState, MessageId};
use iiot_edge::commands::{CommandConfig, LedgerConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Deliver command `i` (of the case's set).
    Deliver(usize),
    /// Stop the gateway and start it again on the same stores.
    Restart,
}

#[derive(Debug, Clone)]
struct Spec {
    target: u8,
    /// Issued this many ms ago.
    age_ms: u64,
    expired: bool,
    fails: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..3,
        0u64..5_000,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(target, age_ms, expired, fails)| Spec {
            target,
            age_ms,
            expired,
            fails,
        })
}

fn build(i: usize, s: &Spec) -> Command {
    let ttl = if s.expired {
        Duration::from_millis(s.age_ms / 2)
    } else {
        Duration::from_secs(600)
    };
    let value = if s.fails { 13.0 } else { i as f64 };
    let mut c = command(
        i as u128,
        &format!("t{}", s.target),
        value,
        Duration::from_millis(s.age_ms + 1),
        ttl.max(Duration::from_millis(1)),
    );
    c.id = MessageId::from_parts(c.issued_at.unix_millis() as u64, i as u128);
    c
}

fn ops(n: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![9 => (0..n).prop_map(Op::Deliver), 1 => Just(Op::Restart)],
        1..40,
    )
}

fn config() -> CommandConfig {
    CommandConfig {
        rate_limit: None,
        ..CommandConfig::default()
    }
}

async fn check(specs: Vec<Spec>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cmds: Vec<Command> = specs.iter().enumerate().map(|(i, s)| build(i, s)).collect();
    let h = Handler {
        fail_on: Some(13.0),
        ..Handler::default()
    };
    let mut acks: Vec<CommandAck> = Vec::new();
    let mut deliveries: HashMap<MessageId, usize> = HashMap::new();
    let mut r: Rig = rig(dir.path(), h.clone(), config(), LedgerConfig::default()).await;
    for op in &ops {
        match op {
            Op::Deliver(i) => {
                r.send(&cmds[*i]).await;
                *deliveries.entry(cmds[*i].id).or_default() += 1;
            }
            Op::Restart => {
                acks.extend(r.stop().await);
                r = rig(dir.path(), h.clone(), config(), LedgerConfig::default()).await;
            }
        }
    }
    // Every delivery is answered, eventually.
    let give_up = Instant::now() + Duration::from_secs(10);
    let short = |acks: &[CommandAck]| {
        deliveries
            .iter()
            .any(|(id, n)| acks.iter().filter(|a| a.command_id == *id).count() < *n)
    };
    while short(&acks) {
        let left = give_up.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.acks.recv()).await {
            Ok(Some(a)) => acks.push(a),
            _ => prop_assert!(false, "acks missing: {} for {deliveries:?}", acks.len()),
        }
    }
    let calls = h.calls.lock().unwrap().clone();
    // At most once.
    let mut per_id: HashMap<MessageId, usize> = HashMap::new();
    for c in &calls {
        *per_id.entry(c.command).or_default() += 1;
    }
    prop_assert!(
        per_id.values().all(|&n| n == 1),
        "a command ran twice: {per_id:?}"
    );
    let by_id: HashMap<MessageId, &Command> = cmds.iter().map(|c| (c.id, c)).collect();
    for (id, n) in &deliveries {
        let state = r.ledger.state_of(*id).unwrap();
        prop_assert!(
            state.is_some_and(CommandState::is_terminal),
            "{id} ended {state:?}"
        );
        let mine: Vec<&CommandAck> = acks.iter().filter(|a| a.command_id == *id).collect();
        // At least one per delivery: the control lane delivers at least once, so
        // a restart may send an ack again that was confirmed just before the stop.
        prop_assert!(
            mine.len() >= *n,
            "{} acks for {n} deliveries of {id}",
            mine.len()
        );
        prop_assert!(
            mine.iter().all(|a| Some(a.state) == state),
            "acks of {id} disagree: {mine:?} vs {state:?}"
        );
        let firsts: Vec<_> = mine.iter().filter(|a| !a.duplicate).collect();
        prop_assert!(
            !firsts.is_empty() && firsts.iter().all(|a| **a == *firsts[0]),
            "{firsts:?}"
        );
    }
    for (i, s) in specs.iter().enumerate() {
        if s.expired {
            prop_assert!(!per_id.contains_key(&cmds[i].id), "expired command {i} ran");
        }
    }
    // Per target, calls in strictly increasing issue order.
    let mut last: HashMap<String, (i64, MessageId)> = HashMap::new();
    for c in &calls {
        let cmd = by_id[&c.command];
        let key = (cmd.issued_at.unix_nanos(), cmd.id);
        if let Some(prev) = last.insert(cmd.target.to_string(), key) {
            prop_assert!(
                prev < key,
                "{} ran after a newer command on {}",
                cmd.id,
                cmd.target
            );
        }
    }
    r.stop().await;
    Ok(())
}

fn case() -> impl Strategy<Value = (Vec<Spec>, Vec<Op>)> {
    prop::collection::vec(spec(), 1..8).prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), ops(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn executor_matches_the_model((specs, ops) in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(specs, ops))?;
    }
}
