//! `iiot browse --endpoint URL`: an OPC-UA server's variables as a ready tag map for
//! `opcua_map` of gateway.toml.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use iiot_protocols::opcua::{OpcUaClient, OpcUaConfig, tag_map_toml};

use crate::config;
use crate::error::AppError;

/// Arguments of `iiot browse`.
#[derive(Debug, Args)]
pub struct BrowseArgs {
    /// The server, `opc.tcp://host:port/path`.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// An OPC-UA tag map whose endpoint, security and identity to use (its tags are
    /// ignored); `--endpoint` overrides its endpoint.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start here instead of the Objects folder (a node id: `ns=2;s=Line1`).
    #[arg(long, value_name = "NODE")]
    pub from: Option<String>,
    /// How many levels of folders and objects to descend.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// How long to wait for the server.
    #[arg(long, default_value = "10s", value_parser = iiot_core::duration::parse)]
    pub timeout: Duration,
}

/// Connects, walks the address space and prints the tag map on stdout.
///
/// # Errors
/// [`AppError::Usage`] without an endpoint, [`AppError::OpcUa`] when the server cannot
/// be reached or refuses the browse, [`AppError::Config`] for a bad `--config`.
pub async fn run(args: &BrowseArgs) -> Result<(), AppError> {
    let mut cfg = match &args.config {
        Some(file) => config::load_opcua_map(file, "--config", file)?,
        None => OpcUaConfig::new(""),
    };
    if let Some(e) = &args.endpoint {
        cfg.endpoint.clone_from(e);
    }
    if cfg.endpoint.is_empty() {
        return Err(AppError::Usage(
            "iiot browse needs --endpoint opc.tcp://host:port/ (or --config with an endpoint)"
                .into(),
        ));
    }
    cfg.tags.clear();
    cfg.request_timeout = args.timeout;
    cfg.validate()?;
    let client = OpcUaClient::connect(&cfg).await?;
    let vars = client.browse(args.from.as_deref(), args.depth).await;
    client.disconnect().await;
    let vars = vars?;
    eprintln!(
        "iiot browse: {} variables under {}",
        vars.len(),
        args.from.as_deref().unwrap_or("Objects")
    );
    print!("{}", tag_map_toml(&cfg.endpoint, &vars));
    Ok(())
}
