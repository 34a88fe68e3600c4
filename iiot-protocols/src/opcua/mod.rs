//! OPC-UA client (async-opcua): a subscription as a source of the gateway runtime,
//! the status code carried whole into core's quality, secure channels, recovery after
//! server restarts, browse, read and write.
//!
//! The path of one reading: an [`OpcUaConfig`] (TOML, validated) names the endpoint,
//! the security and the tags (node id in string form: `ns=2;s=Line1.Temp`, numeric,
//! GUID or opaque); [`OpcUaSource`] makes one subscription with a monitored item per
//! tag; each data change becomes a core [`Sample`](iiot_core::types::Sample): the value
//! converted as the table in [`convert`] says (DateTime as integer nanoseconds since
//! the Unix epoch), the full 32-bit status code as quality, the source timestamp (the
//! server's when the source has none). The runtime of `iiot-edge` batches those readings
//! like the Modbus ones. Its [`OpcUaHandle`] is a
//! [`CommandHandler`](iiot_core::command::CommandHandler): tags marked `writable` are
//! targets of commands, written as the node's own data type. [`OpcUaClient`] reads,
//! writes and browses outside a source; [`tag_map_toml`] turns a browse into a tag map.
//!
//! ## Deadbands
//!
//! The runtime's report by exception is the gateway's one deadband (`deadband` and
//! `max_report_interval` on a tag, as for Modbus). A tag may instead have a
//! `server_deadband` (absolute, or percent of the node's EURange): the server filters
//! with a DataChangeFilter and the runtime passes that tag through. Never both: a
//! server that filters cannot be made to repeat an unchanged value, so the runtime's
//! maximum report interval would break; the configuration refuses the pair.
//!
//! ## Outages
//!
//! While the server cannot be reached every tag is reported once without a value and
//! with quality `Bad_CommunicationError`, and the source's link is down: a dashboard
//! never shows a stale Good value. The client reconnects with backoff; async-opcua
//! reactivates the session, or transfers the subscription to a new one, or recreates
//! it, and the server sends each tag's current value again. The source does not take
//! that on trust: monitored items missing after a reconnect are created again, a
//! subscription the server ended (`BadNoSubscription`, a Bad status change) is made
//! anew, and so is one that answers no publish for three keep-alive intervals while
//! the session is up (a watchdog: the server must at least send empty keep-alives).
//!
//! ## Security
//!
//! Policies `None`, `Basic256Sha256` and `Aes128_Sha256_RsaOaep`, modes `Sign` and
//! `SignAndEncrypt`, with the client's certificate and key ([`create_certificate`]
//! makes a fitting pair). A server certificate is trusted when it is in the store's
//! `trusted/` directory; an unknown one is written to `rejected/` and the connection
//! refused with [`OpcUaError::UntrustedServer`], which says where to move it.
//!
//! ## Dependency facts
//!
//! - **License.** async-opcua is MPL-2.0. The MPL is a file-level copyleft: it binds
//!   changes to async-opcua's own files, not the code that uses it, so it is fine as a
//!   dependency of this Apache-2.0 OR MIT crate and of closed-source programs built on
//!   it. Whoever ships a binary must offer async-opcua's source (its crates.io
//!   release is that source) and keep its license notice.
//! - **RUSTSEC-2023-0071 (the `rsa` crate, "Marvin attack").** async-opcua's secure
//!   channels use the pure-Rust `rsa` crate, whose RSA decryption is not constant-time:
//!   an attacker who can send many crafted messages to the process and measure its
//!   response times precisely may recover an RSA private key (the gateway's
//!   certificate key). No fixed release exists. What it means here: policy `None`
//!   does no RSA at all. `Sign` and `SignAndEncrypt` use RSA decryption only while a
//!   secure channel is opened (the asymmetric handshake); the messages of an open
//!   channel are protected with symmetric keys. The exposure is therefore an attacker on
//!   the network path who can make the client open channels many times and time each
//!   one precisely. Keep OPC-UA on a network segment only the plant's equipment can
//!   reach (IEC 62443 zones), keep the reconnect backoff (it limits the rate of
//!   handshakes), give the gateway its own certificate (never share a key between
//!   devices), and renew certificates periodically. SignAndEncrypt is still far better
//!   than None on any network with other hosts on it.

mod browse;
mod client;
mod config;
pub mod convert;
mod error;
mod handle;
#[cfg(feature = "opcua-sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "opcua-sim")))]
pub mod sim;
mod source;

pub use browse::{MAX_NODES, tag_map_toml};
pub use client::{BrowsedVariable, OpcUaClient, ReadValue};
pub use config::{
    Identity, OpcUaConfig, SecurityConfig, SecurityMode, SecurityPolicy, ServerDeadband, TagConfig,
};
pub use convert::{ConvertError, NodeRef};
pub use error::{OpcUaConfigError, OpcUaError};
pub use source::{OpcUaHandle, OpcUaSource};

/// Makes a client application instance certificate (RSA 2048, valid 365 days, for the
/// application URI the client presents, `urn:iiot-rs:gateway`, and the host names of
/// this machine) and its private key at `certificate` (`.der`) and `private_key`
/// (PEM), creating their directories. An existing pair is left alone.
///
/// # Errors
/// [`OpcUaConfigError::Client`] when the files cannot be written.
pub fn create_certificate(
    certificate: &std::path::Path,
    private_key: &std::path::Path,
) -> Result<(), OpcUaConfigError> {
    use opcua::crypto::{CertificateStore, X509Data};
    use opcua::types::{ApplicationDescription, ApplicationType, LocalizedText, UAString};
    if certificate.exists() && private_key.exists() {
        return Ok(());
    }
    let desc = ApplicationDescription {
        application_uri: UAString::from(client::APPLICATION_URI),
        product_uri: UAString::from("urn:iiot-rs"),
        application_name: LocalizedText::from(client::APPLICATION_NAME),
        application_type: ApplicationType::Client,
        ..Default::default()
    };
    let data = X509Data::from((
        desc,
        Some(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
    ));
    for p in [certificate, private_key] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| OpcUaConfigError::Client {
                problem: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
    }
    CertificateStore::create_certificate_and_key(&data, false, certificate, private_key)
        .map(|_| ())
        .map_err(|problem| OpcUaConfigError::Client { problem })
}
