//! Real services the tests talk to, and what to do when one is missing.
//!
//! A test that needs PostgreSQL calls [`pg_client`]: it returns `None` after
//! printing why when the server cannot be reached, so the test returns early;
//! with `IIOT_REQUIRE_SERVICES=1` (CI) a missing service fails the test instead.

use std::time::Duration;

/// `IIOT_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn pg_url() -> String {
    std::env::var("IIOT_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether a missing service fails the test (`IIOT_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("IIOT_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Reports a missing service: panics when services are required, else prints
/// why the test is skipped.
pub fn missing(service: &str, why: &str) {
    assert!(
        !services_required(),
        "{service} required (IIOT_REQUIRE_SERVICES=1) but unavailable: {why}"
    );
    eprintln!("skipping: {service} unavailable: {why}");
}

/// A client on [`pg_url`], its connection driven by a spawned task; `None` (after
/// [`missing`]) when PostgreSQL cannot be reached within 5 s.
pub async fn pg_client() -> Option<tokio_postgres::Client> {
    let url = pg_url();
    let attempt = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&url, tokio_postgres::NoTls),
    )
    .await;
    match attempt {
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Some(client)
        }
        Ok(Err(e)) => {
            missing("PostgreSQL", &format!("{url}: {e}"));
            None
        }
        Err(_) => {
            missing("PostgreSQL", &format!("{url}: connect timed out"));
            None
        }
    }
}
