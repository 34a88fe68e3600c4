//! Identity check before connecting (issue 5): missing file, bad PEM, expired
//! certificate, CN that differs from the client id; each a typed error naming
//! the file. Also the other configuration refusals.

#[path = "common/mqtt.rs"]
mod mqtt_common;

use iiot_protocols::mqtt::{ConfigError, IdentityProblem, MqttConfig, Session};
use mqtt_common::{Pki, prefix};

fn tls_config(ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> MqttConfig {
    let mut c = MqttConfig::new("mqtts://127.0.0.1:8883", "dev-1", prefix("dev-1"));
    c.set_ca_path(ca).set_client_identity(cert, key);
    c
}

fn identity_problem(c: &MqttConfig) -> (std::path::PathBuf, IdentityProblem) {
    match Session::new(c).unwrap_err() {
        ConfigError::Identity(e) => (e.path, e.problem),
        other => panic!("expected an identity error, got {other:?}"),
    }
}

#[test]
fn good_identity_builds() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ok");
    let (cert, key) = pki.client("dev-1", false);
    assert!(Session::new(&tls_config(&pki.ca, &cert, &key)).is_ok());
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "missing");
    let (_, key) = pki.client("dev-1", false);
    let absent = dir.path().join("absent.pem");
    let (path, problem) = identity_problem(&tls_config(&pki.ca, &absent, &key));
    assert_eq!(path, absent);
    assert!(
        matches!(problem, IdentityProblem::Unreadable(e) if e.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn bad_pem_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "badpem");
    let (cert, key) = pki.client("dev-1", false);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (path, problem) = identity_problem(&tls_config(&pki.ca, &garbage, &key));
    assert_eq!(path, garbage);
    assert!(matches!(problem, IdentityProblem::BadPem), "{problem:?}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no pem here\n").unwrap();
    let (_, problem) = identity_problem(&tls_config(&empty, &cert, &key));
    assert!(
        matches!(problem, IdentityProblem::NoCertificate),
        "{problem:?}"
    );
    let (path, problem) = identity_problem(&tls_config(&pki.ca, &cert, &empty));
    assert_eq!(path, empty);
    assert!(
        matches!(problem, IdentityProblem::NoPrivateKey),
        "{problem:?}"
    );
}

#[test]
fn expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "expired");
    let (cert, key) = pki.client("dev-1", true);
    let (path, problem) = identity_problem(&tls_config(&pki.ca, &cert, &key));
    assert_eq!(path, cert);
    assert!(
        matches!(problem, IdentityProblem::Expired { .. }),
        "{problem:?}"
    );
}

#[test]
fn cn_must_equal_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cn");
    let (cert, key) = pki.client("dev-2", false);
    let (path, problem) = identity_problem(&tls_config(&pki.ca, &cert, &key));
    assert_eq!(path, cert);
    match problem {
        IdentityProblem::CommonNameMismatch {
            common_name,
            client_id,
        } => assert_eq!(
            (common_name.as_str(), client_id.as_str()),
            ("dev-2", "dev-1")
        ),
        other => panic!("{other:?}"),
    }
    // The message names file and problem.
    let msg = Session::new(&tls_config(&pki.ca, &cert, &key))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("client-dev-2.pem") && msg.contains("differs"),
        "{msg}"
    );
}

#[test]
fn key_of_another_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "keymix");
    let (cert, _) = pki.client("dev-1", false);
    let (_, other_key) = pki.client("dev-9", false);
    let (_, problem) = identity_problem(&tls_config(&pki.ca, &cert, &other_key));
    assert!(matches!(problem, IdentityProblem::Tls(_)), "{problem:?}");
}

#[test]
fn other_configuration_refusals() {
    let bad = |c: &MqttConfig| Session::new(c).unwrap_err();
    assert!(matches!(
        bad(&MqttConfig::new("tcp://h", "d", prefix("d"))),
        ConfigError::BrokerUrl { .. }
    ));
    assert!(matches!(
        bad(&MqttConfig::new("mqtt://h", "d d", "a/d d")),
        ConfigError::ClientId { .. }
    ));
    assert!(matches!(
        bad(&MqttConfig::new("mqtt://h", "d", "a//d")),
        ConfigError::TopicPrefix { .. }
    ));
    assert!(matches!(
        bad(&MqttConfig::new("mqtt://h", "d", prefix("other"))),
        ConfigError::TopicPrefixDevice { .. }
    ));
    assert!(matches!(
        bad(&MqttConfig::new("mqtts://h", "d", prefix("d"))),
        ConfigError::MissingCa
    ));
    let mut c = MqttConfig::new("mqtt://h", "d", prefix("d"));
    c.set_ca_path("/x");
    assert!(matches!(bad(&c), ConfigError::TlsFiles { .. }));
}
