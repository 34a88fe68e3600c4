//! The commands table of the SQLite and PostgreSQL sinks (issue 16, platform
//! side): commands and acks upserted in any order, duplicate acks changing
//! nothing, the first final ack winning, a device's final ack replacing the
//! platform's `expired_unconfirmed` mark, and the sweep marking only overdue
//! open commands. Each scenario runs on the memory sink (the model,
//! [`CommandTable`](iiot_ingest::commands::CommandTable)), on SQLite and on the
//! PostgreSQL server at `IIOT_PG_URL`; the SQL tables must equal the model row
//! for row, and the model's rows are checked against the expected outcome.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use bytes::Bytes;
use common::commands::{GRACE, ack, at, cid, commit, pg_commands, set_command, sqlite_commands};
use common::pg::PgEnv;
use common::sink::dev;
use iiot_core::types::{
    AckReason, CommandState as S, Constraints, Operation, TagPath, Timestamp, Value,
};
use iiot_ingest::commands::{CommandRecord, OpKind, TrackedState};
use iiot_ingest::record::CommitBatch;
use iiot_ingest::sink::Sink;
use iiot_ingest::sink::memory::MemorySink;
use iiot_ingest::sink::postgres::PostgresSink;
use iiot_ingest::sink::sqlite::{SqliteConfig, SqliteSink};
use tempfile::TempDir;

/// One step of a scenario.
enum Step {
    /// Commit this batch.
    Commit(CommitBatch),
    /// Sweep at `at(now_s)` with [`GRACE`]; expect this many marked.
    Sweep(i64, u64),
    /// Check the rows as they are now.
    Check(fn(&[CommandRecord])),
}

/// Where a scenario runs.
enum Backend {
    Memory(MemorySink),
    Sqlite(SqliteSink, TempDir),
    Postgres(Box<(PostgresSink, PgEnv)>),
}

impl Backend {
    async fn sqlite() -> Self {
        let dir = TempDir::new().unwrap();
        let sink = SqliteSink::open(SqliteConfig::new(dir.path().join("ingest.sqlite3")))
            .await
            .unwrap();
        Self::Sqlite(sink, dir)
    }

    async fn postgres(name: &str) -> Option<Self> {
        let env = PgEnv::new(name).await?;
        let sink = env.sink().await;
        Some(Self::Postgres(Box::new((sink, env))))
    }

    async fn commit(&mut self, b: &CommitBatch) {
        match self {
            Self::Memory(s) => s.commit(b).await.unwrap(),
            Self::Sqlite(s, _) => s.commit(b).await.unwrap(),
            Self::Postgres(p) => p.0.commit(b).await.unwrap(),
        };
    }

    async fn sweep(&mut self, now: Timestamp) -> u64 {
        match self {
            Self::Memory(s) => s.expire_unconfirmed_commands(now, GRACE).await,
            Self::Sqlite(s, _) => s.expire_unconfirmed_commands(now, GRACE).await,
            Self::Postgres(p) => p.0.expire_unconfirmed_commands(now, GRACE).await,
        }
        .unwrap()
    }

    async fn rows(&self) -> Vec<CommandRecord> {
        match self {
            Self::Memory(s) => s.store().command_table.iter().cloned().collect(),
            Self::Sqlite(_, dir) => {
                let db = rusqlite::Connection::open(dir.path().join("ingest.sqlite3")).unwrap();
                sqlite_commands(&db, "iiot_")
            }
            Self::Postgres(p) => pg_commands(&p.1.client, &p.1.table("commands")).await,
        }
    }

    async fn run(&mut self, steps: &[Step]) -> Vec<CommandRecord> {
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Commit(b) => self.commit(b).await,
                Step::Sweep(now, want) => {
                    assert_eq!(self.sweep(at(*now)).await, *want, "sweep at step {i}");
                }
                Step::Check(check) => check(&self.rows().await),
            }
        }
        self.rows().await
    }

    async fn cleanup(self) {
        if let Self::Postgres(p) = self {
            p.1.cleanup().await;
        }
    }
}

/// Runs `steps` on the model and on `backend`; the rows must agree.
async fn check_against_model(mut backend: Backend, steps: &[Step]) -> Vec<CommandRecord> {
    let model = Backend::Memory(MemorySink::new()).run(steps).await;
    let got = backend.run(steps).await;
    assert_eq!(got, model, "the SQL table differs from the model");
    backend.cleanup().await;
    got
}

/// One test per scenario and backend.
macro_rules! on_every_sink {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                check_against_model(Backend::sqlite().await, &super::$scenario()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(b) = Backend::postgres(concat!("cmd_", stringify!($scenario))).await
                else {
                    return;
                };
                check_against_model(b, &super::$scenario()).await;
            }
        }
    };
}

fn one(rows: &[CommandRecord]) -> &CommandRecord {
    assert_eq!(rows.len(), 1, "{rows:#?}");
    &rows[0]
}

/// Acks first (delivered, then completed with a result), the command last: one
/// row with everything, the final state kept.
fn ack_before_command() -> Vec<Step> {
    let cmd = set_command("dev-a", 1, "tank1/setpoint", Value::Double(80.0), 30);
    let delivered = ack("dev-a", 1, S::Delivered, 2);
    let mut completed = ack("dev-a", 1, S::Completed, 4);
    completed.result = Some(Value::Double(79.5));
    completed.detail = Some("done".into());
    vec![
        Step::Commit(commit(&[], &[delivered], 2)),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.state, TrackedState::State(S::Delivered));
            assert_eq!(
                (r.target.as_ref(), r.issued_at),
                (None, None),
                "no command yet"
            );
        }),
        Step::Commit(commit(&[], &[completed], 4)),
        Step::Commit(commit(&[cmd], &[], 5)),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.state, TrackedState::State(S::Completed));
            assert_eq!(
                r.target.as_ref().map(TagPath::as_str),
                Some("tank1/setpoint")
            );
            assert_eq!(r.op, Some(OpKind::Set));
            assert_eq!(r.value, Some(Value::Double(80.0)));
            assert_eq!(r.action.as_deref(), Some("write"));
            assert_eq!(r.issuer.as_deref(), Some("ops-console"));
            assert_eq!(r.reason.as_deref(), Some("recipe change"));
            assert_eq!((r.issued_at, r.expires_at), (Some(at(0)), Some(at(30))));
            assert_eq!(r.result, Some(Value::Double(79.5)));
            assert_eq!(r.detail.as_deref(), Some("done"));
            assert_eq!(r.received_at, Some(at(1)));
            assert_eq!(r.delivered_at, Some(at(2)), "the first ack's time");
            assert_eq!(r.final_at, Some(at(4)));
            assert_eq!(r.updated_at, at(5), "the command filled its columns");
        }),
    ]
}
on_every_sink!(ack_before_command);

/// An ack marked duplicate, a re-delivered ack and a re-delivered command
/// change nothing, not even `updated_at`; a duplicate ack of an unknown command
/// creates no row.
fn duplicates_change_nothing() -> Vec<Step> {
    let cmd = set_command("dev-a", 1, "sp", Value::Int(5), 30);
    let mut completed = ack("dev-a", 1, S::Completed, 3);
    completed.detail = Some("ok".into());
    let mut dup = ack("dev-a", 1, S::Failed, 5);
    dup.duplicate = true;
    dup.detail = Some("re-sent".into());
    dup.received_at = Some(at(2));
    let mut unknown = ack("dev-a", 99, S::Completed, 5);
    unknown.duplicate = true;
    vec![
        Step::Commit(commit(std::slice::from_ref(&cmd), &[], 0)),
        Step::Commit(commit(&[], &[completed.clone()], 3)),
        Step::Commit(commit(&[], &[dup], 6)),
        Step::Commit(commit(&[cmd], &[completed], 7)),
        Step::Commit(commit(&[], &[unknown], 8)),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.command_id, cid(1));
            assert_eq!(r.state, TrackedState::State(S::Completed));
            assert_eq!(r.detail.as_deref(), Some("ok"));
            assert_eq!(r.final_at, Some(at(3)));
            assert_eq!(r.received_at, Some(at(1)));
            assert_eq!(
                r.updated_at,
                at(3),
                "nothing changed after the first final ack"
            );
        }),
    ]
}
on_every_sink!(duplicates_change_nothing);

/// The first final ack wins: a later final one (another state, a result, a
/// reason) is ignored, and so is a later non-final one; a late `delivered` with
/// an earlier time only moves `delivered_at` back to it.
fn first_final_wins_and_nothing_moves_it_back() -> Vec<Step> {
    let cmd = set_command("dev-a", 1, "sp", Value::Double(120.0), 30);
    let executing = ack("dev-a", 1, S::Executing, 2);
    let mut rejected = ack("dev-a", 1, S::Rejected, 3);
    rejected.reason = Some(AckReason::AboveMax);
    rejected.detail = Some("120 > max 100".into());
    let mut completed = ack("dev-a", 1, S::Completed, 4);
    completed.result = Some(Value::Double(120.0));
    let later_executing = ack("dev-a", 1, S::Executing, 5);
    let late_delivered = ack("dev-a", 1, S::Delivered, 1);
    vec![
        Step::Commit(commit(&[cmd], &[executing], 2)),
        Step::Commit(commit(&[], &[rejected], 3)),
        Step::Commit(commit(&[], &[completed], 4)),
        Step::Commit(commit(&[], &[later_executing], 5)),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.state, TrackedState::State(S::Rejected));
            assert_eq!(r.ack_reason, Some(AckReason::AboveMax));
            assert_eq!(r.detail.as_deref(), Some("120 > max 100"));
            assert_eq!(r.result, None, "the losing ack's result is not taken");
            assert_eq!(r.final_at, Some(at(3)));
            assert_eq!(r.updated_at, at(3));
        }),
        Step::Commit(commit(&[], &[late_delivered], 6)),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.state, TrackedState::State(S::Rejected));
            assert_eq!(r.delivered_at, Some(at(1)));
            assert_eq!(r.updated_at, at(6));
        }),
    ]
}
on_every_sink!(first_final_wins_and_nothing_moves_it_back);

/// Past `expires_at + grace` without a final ack: `expired_unconfirmed`. A later
/// non-final ack leaves the mark, the device's final ack replaces it (with its
/// own time as `final_at`), and a second final ack changes nothing.
fn device_final_replaces_expired_unconfirmed() -> Vec<Step> {
    let cmd = set_command("dev-a", 1, "sp", Value::Double(50.0), 30);
    let executing = ack("dev-a", 1, S::Executing, 62);
    let mut completed = ack("dev-a", 1, S::Completed, 63);
    completed.result = Some(Value::Double(50.0));
    let failed = ack("dev-a", 1, S::Failed, 64);
    vec![
        Step::Commit(commit(&[cmd], &[], 0)),
        Step::Sweep(60, 0), // expires 30 + grace 30: not yet past
        Step::Sweep(61, 1),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.state, TrackedState::ExpiredUnconfirmed);
            assert_eq!(r.state.as_str(), "expired_unconfirmed");
            assert_eq!((r.final_at, r.updated_at), (Some(at(61)), at(61)));
        }),
        Step::Commit(commit(&[], &[executing], 62)),
        Step::Sweep(70, 0),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(
                r.state,
                TrackedState::ExpiredUnconfirmed,
                "a non-final ack keeps the mark"
            );
            assert_eq!(r.delivered_at, Some(at(62)));
            assert_eq!(r.final_at, Some(at(61)));
        }),
        Step::Commit(commit(&[], &[completed], 63)),
        Step::Commit(commit(&[], &[failed], 64)),
        Step::Sweep(200, 0),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.state, TrackedState::State(S::Completed));
            assert_eq!(r.final_at, Some(at(63)));
            assert_eq!(r.result, Some(Value::Double(50.0)));
            assert_eq!(r.updated_at, at(63));
        }),
    ]
}
on_every_sink!(device_final_replaces_expired_unconfirmed);

/// The sweep marks only open commands whose deadline plus grace has passed,
/// and marks each once.
fn sweep_marks_only_overdue_open_commands() -> Vec<Step> {
    let cmd = |id, ttl| set_command("dev-a", id, "sp", Value::Double(1.0), ttl);
    let commands = [
        cmd(1, 30),  // A: no ack, overdue at 61
        cmd(2, 30),  // B: completed
        cmd(3, 120), // C: not overdue at 61
        cmd(4, 31),  // D: exactly at the cutoff at 61: not overdue yet
        cmd(5, 30),  // E: executing, overdue
        cmd(7, 30),  // G: rejected
    ];
    let acks = [
        ack("dev-a", 2, S::Completed, 5),
        ack("dev-a", 5, S::Executing, 5),
        ack("dev-a", 6, S::Delivered, 5), // F: an ack without its command (no deadline)
        ack("dev-a", 7, S::Rejected, 5),
    ];
    vec![
        Step::Commit(commit(&commands, &acks, 5)),
        Step::Sweep(61, 2),
        Step::Sweep(61, 0),
        Step::Check(|rows| {
            let states: Vec<(u128, &str)> = rows
                .iter()
                .map(|r| (r.command_id.to_u128() & 0xff, r.state.as_str()))
                .collect();
            assert_eq!(
                states,
                vec![
                    (1, "expired_unconfirmed"),
                    (2, "completed"),
                    (3, "queued"),
                    (4, "queued"),
                    (5, "expired_unconfirmed"),
                    (6, "delivered"),
                    (7, "rejected"),
                ]
            );
        }),
        Step::Sweep(200, 2),
        Step::Check(|rows| {
            let marked: Vec<(u128, Option<Timestamp>)> = rows
                .iter()
                .filter(|r| r.state == TrackedState::ExpiredUnconfirmed)
                .map(|r| (r.command_id.to_u128() & 0xff, r.final_at))
                .collect();
            assert_eq!(
                marked,
                vec![
                    (1, Some(at(61))),
                    (3, Some(at(200))),
                    (4, Some(at(200))),
                    (5, Some(at(61))),
                ]
            );
        }),
    ]
}
on_every_sink!(sweep_marks_only_overdue_open_commands);

/// A command and all its acks (one a duplicate) in one commit, in any order,
/// committed twice (a redelivery): each statement sees the row the previous one
/// left, and the second commit changes nothing.
fn one_commit_holds_a_command_and_its_acks() -> Vec<Step> {
    let cmd = set_command("dev-b", 3, "valve/open", Value::Bool(true), 10);
    let mut dup = ack("dev-b", 3, S::Completed, 4);
    dup.duplicate = true;
    let acks = [
        ack("dev-b", 3, S::Completed, 4),
        ack("dev-b", 3, S::Delivered, 2),
        dup,
        ack("dev-b", 3, S::Executing, 3),
    ];
    let batch = commit(&[cmd], &acks, 5);
    let again = CommitBatch {
        commands: batch
            .commands
            .iter()
            .cloned()
            .map(|mut c| {
                c.received_at = at(9);
                c
            })
            .collect(),
        command_acks: batch
            .command_acks
            .iter()
            .cloned()
            .map(|mut a| {
                a.received_at = at(9);
                a
            })
            .collect(),
        ..CommitBatch::default()
    };
    vec![
        Step::Commit(batch),
        Step::Commit(again),
        Step::Check(|rows| {
            let r = one(rows);
            assert_eq!(r.device_id, dev("dev-b"));
            assert_eq!(r.state, TrackedState::State(S::Completed));
            assert_eq!(r.delivered_at, Some(at(2)));
            assert_eq!(r.final_at, Some(at(4)));
            assert_eq!(r.value, Some(Value::Bool(true)));
            assert_eq!(r.updated_at, at(5), "the redelivery changed nothing");
        }),
    ]
}
on_every_sink!(one_commit_holds_a_command_and_its_acks);

/// Values and results of every kind come back exactly (NaN, -0.0, u64::MAX,
/// text, bytes), and an add and an invoke keep their kind.
fn values_and_results_round_trip() -> Vec<Step> {
    let mut add = set_command("dev-c", 1, "counter", Value::Int(0), 30);
    add.op = Operation::Add(Value::Int(-5));
    let mut invoke = set_command("dev-c", 2, "alarm", Value::Int(0), 30);
    invoke.op = Operation::Invoke;
    invoke.action = "reset_alarm".into();
    invoke.constraints = Constraints::default();
    let big = set_command("dev-c", 3, "total", Value::UInt(u64::MAX), 30);
    let text = set_command("dev-c", 4, "recipe", Value::String("héllo ✓".into()), 30);
    let neg_zero = set_command("dev-c", 5, "bias", Value::Double(-0.0), 30);
    let results = [
        (1, Value::Double(f64::NAN)),
        (2, Value::Bytes(Bytes::from_static(&[0, 255, 7]))),
        (3, Value::UInt(u64::MAX)),
        (4, Value::Float(-0.0)),
        (5, Value::Int(i64::MIN)),
    ];
    let acks: Vec<_> = results
        .iter()
        .map(|(id, v)| {
            let mut a = ack("dev-c", *id, S::Completed, 3);
            a.result = Some(v.clone());
            a
        })
        .collect();
    vec![
        Step::Commit(commit(&[add, invoke, big, text, neg_zero], &acks, 3)),
        Step::Check(|rows| {
            assert_eq!(rows.len(), 5);
            let by = |n: u128| rows.iter().find(|r| r.command_id == cid(n)).unwrap();
            assert_eq!(
                (by(1).op, by(1).value.clone()),
                (Some(OpKind::Add), Some(Value::Int(-5)))
            );
            assert_eq!(
                (by(2).op, by(2).value.clone()),
                (Some(OpKind::Invoke), None)
            );
            assert_eq!(by(2).action.as_deref(), Some("reset_alarm"));
            assert_eq!(by(3).value, Some(Value::UInt(u64::MAX)));
            assert_eq!(by(4).value, Some(Value::String("héllo ✓".into())));
            assert_eq!(by(5).value, Some(Value::Double(-0.0)));
            assert_eq!(by(1).result, Some(Value::Double(f64::NAN)));
            assert_eq!(
                by(2).result,
                Some(Value::Bytes(Bytes::from_static(&[0, 255, 7])))
            );
            assert_eq!(by(4).result, Some(Value::Float(-0.0)));
            assert_eq!(by(5).result, Some(Value::Int(i64::MIN)));
        }),
    ]
}
on_every_sink!(values_and_results_round_trip);

/// Two PostgreSQL sinks (two ingest workers behind a shared subscription)
/// commit the commands and their acks concurrently: every row ends complete,
/// nothing lost, whoever came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_lose_no_update_on_postgres() {
    let Some(env) = PgEnv::new("cmd_concurrent").await else {
        return;
    };
    let mut a = env.sink().await;
    let mut b = env.sink().await;
    let n = 50u128;
    let commands: Vec<_> = (0..n)
        .map(|i| set_command("dev-d", i, "sp", Value::Double(i as f64), 30))
        .collect();
    let acks: Vec<_> = (0..n)
        .flat_map(|i| {
            [
                ack("dev-d", i, S::Delivered, 2),
                ack("dev-d", i, S::Completed, 3),
            ]
        })
        .collect();
    let commands_side = async {
        for c in commands.chunks(5) {
            a.commit(&commit(c, &[], 4)).await.unwrap();
        }
    };
    let acks_side = async {
        for k in acks.chunks(4) {
            b.commit(&commit(&[], k, 4)).await.unwrap();
        }
    };
    tokio::join!(commands_side, acks_side);
    let rows = pg_commands(&env.client, &env.table("commands")).await;
    assert_eq!(rows.len(), n as usize);
    for r in &rows {
        assert_eq!(r.state, TrackedState::State(S::Completed), "{r:?}");
        assert!(r.issued_at.is_some() && r.target.is_some(), "{r:?}");
        assert_eq!((r.delivered_at, r.final_at), (Some(at(2)), Some(at(3))));
    }
    env.cleanup().await;
}
