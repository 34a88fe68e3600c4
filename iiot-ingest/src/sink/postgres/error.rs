//! Mapping tokio-postgres errors onto the pipeline's three reactions.

use crate::sink::SinkError;

/// How the pipeline should react to a PostgreSQL error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retry later on a new connection.
    Unavailable,
    /// The content was refused: bisect.
    Rejected,
    /// Configuration or schema.
    Setup,
}

/// The class of a SQLSTATE code (five characters).
///
/// - `22` data exception (a NUL byte in text, a value out of range) and `23`
///   integrity constraint violation: the batch's content: [`Class::Rejected`].
/// - `54` program limit exceeded (a row or array too large): also content.
/// - `28` authorization, `3D` unknown database, `3F` unknown schema, `42` syntax
///   or access rule (a missing table or permission), `0A` feature not supported:
///   [`Class::Setup`].
/// - Everything else (`08` connection, `57` operator intervention such as
///   `pg_terminate_backend` or a statement timeout, `53` insufficient resources,
///   `40` serialization failure or deadlock, `XX` internal): transient,
///   [`Class::Unavailable`]. Unknown classes count as transient so that good
///   data is never diverted to the dead-letter table by a server problem.
pub(crate) fn class_of_sqlstate(code: &str) -> Class {
    match code.get(..2) {
        Some("22" | "23" | "54") => Class::Rejected,
        Some("28" | "3D" | "3F" | "42" | "0A") => Class::Setup,
        _ => Class::Unavailable,
    }
}

/// Classifies `e`, which happened while doing `during`. Errors without a server
/// answer (I/O, closed connection, timeout) are [`Class::Unavailable`].
pub(crate) fn classify(e: &tokio_postgres::Error, during: &str) -> (Class, SinkError) {
    let class = match e.as_db_error() {
        Some(db) => class_of_sqlstate(db.code().code()),
        // A value the client could not encode (a type mismatch) is a problem of
        // the content or of this code, never of the connection.
        None if e.to_string().starts_with("error serializing") => Class::Rejected,
        None => Class::Unavailable,
    };
    (class, to_error(class, describe(e, during)))
}

/// `during: SEVERITY CODE: message (detail)` for a server error, else the error
/// and its sources.
pub(crate) fn describe(e: &tokio_postgres::Error, during: &str) -> String {
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

pub(crate) fn to_error(class: Class, detail: String) -> SinkError {
    match class {
        Class::Unavailable => SinkError::Unavailable { detail },
        Class::Rejected => SinkError::Rejected { detail },
        Class::Setup => SinkError::Setup { detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        assert_eq!(class_of_sqlstate("22021"), Class::Rejected); // NUL in text
        assert_eq!(class_of_sqlstate("23505"), Class::Rejected);
        assert_eq!(class_of_sqlstate("54000"), Class::Rejected);
        assert_eq!(class_of_sqlstate("57P01"), Class::Unavailable); // terminated
        assert_eq!(class_of_sqlstate("57014"), Class::Unavailable); // statement timeout
        assert_eq!(class_of_sqlstate("08006"), Class::Unavailable);
        assert_eq!(class_of_sqlstate("40P01"), Class::Unavailable);
        assert_eq!(class_of_sqlstate("42P01"), Class::Setup); // missing table
        assert_eq!(class_of_sqlstate("28000"), Class::Setup);
        assert_eq!(class_of_sqlstate("3D000"), Class::Setup);
        assert_eq!(class_of_sqlstate(""), Class::Unavailable);
    }
}
