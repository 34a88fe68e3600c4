//! Mapping tokio-postgres errors onto the pipeline's three reactions.

use crate::sink::{ErrorCode, SinkError, SinkErrorKind, SqlState};

/// The reaction to a SQLSTATE code (five characters).
///
/// - `22` data exception (a NUL byte in text, a value out of range) and `23`
///   integrity constraint violation: the batch's content:
///   [`SinkErrorKind::Rejected`].
/// - `54` program limit exceeded (a row or array too large): also content.
/// - `28` authorization, `3D` unknown database, `3F` unknown schema, `42` syntax
///   or access rule (a missing table or permission), `0A` feature not supported:
///   [`SinkErrorKind::Setup`].
/// - Everything else (`08` connection, `57` operator intervention such as
///   `pg_terminate_backend` or a statement timeout, `53` insufficient resources,
///   `40` serialization failure or deadlock, `XX` internal): transient,
///   [`SinkErrorKind::Unavailable`]. Unknown classes count as transient so that
///   good data is never diverted to the dead-letter table by a server problem.
pub(crate) fn kind_of_sqlstate(code: &str) -> SinkErrorKind {
    match code.get(..2) {
        Some("22" | "23" | "54") => SinkErrorKind::Rejected,
        Some("28" | "3D" | "3F" | "42" | "0A") => SinkErrorKind::Setup,
        _ => SinkErrorKind::Unavailable,
    }
}

/// Whether `e` is the client refusing to encode a parameter: postgres-types'
/// [`WrongType`](postgres_types::WrongType) somewhere in its sources.
fn is_encode_refusal(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<postgres_types::WrongType>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Classifies `e`, which happened while doing `during`, keeping the server's
/// SQLSTATE as the error's code and `e` as its source. Errors without a server
/// answer (I/O, closed connection, timeout) are [`SinkErrorKind::Unavailable`].
pub(crate) fn classify(e: tokio_postgres::Error, during: &str) -> SinkError {
    let (kind, code) = match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            (kind_of_sqlstate(code), SqlState::new(code))
        }
        // A value the client could not encode (a type mismatch) is a problem of
        // the content or of this code, never of the connection.
        None if is_encode_refusal(&e) => (SinkErrorKind::Rejected, None),
        None => (SinkErrorKind::Unavailable, None),
    };
    let err = SinkError::new(kind, describe(&e, during));
    let err = match code {
        Some(c) => err.with_code(ErrorCode::SqlState(c)),
        None => err,
    };
    err.with_source(e)
}

/// `during: SEVERITY CODE: message (detail)` for a server error, else the error
/// and its sources.
fn describe(e: &tokio_postgres::Error, during: &str) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match db.detail() {
            Some(d) => format!("{during}: {} {code}: {} ({d})", db.severity(), db.message()),
            None => format!("{during}: {} {code}: {}", db.severity(), db.message()),
        };
    }
    let mut detail = format!("{during}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_kinds() {
        use SinkErrorKind::{Rejected, Setup, Unavailable};
        assert_eq!(kind_of_sqlstate("22021"), Rejected); // NUL in text
        assert_eq!(kind_of_sqlstate("23505"), Rejected);
        assert_eq!(kind_of_sqlstate("54000"), Rejected);
        assert_eq!(kind_of_sqlstate("57P01"), Unavailable); // terminated
        assert_eq!(kind_of_sqlstate("57014"), Unavailable); // statement timeout
        assert_eq!(kind_of_sqlstate("08006"), Unavailable);
        assert_eq!(kind_of_sqlstate("40P01"), Unavailable);
        assert_eq!(kind_of_sqlstate("42P01"), Setup); // missing table
        assert_eq!(kind_of_sqlstate("28000"), Setup);
        assert_eq!(kind_of_sqlstate("3D000"), Setup);
        assert_eq!(kind_of_sqlstate(""), Unavailable);
    }
}
