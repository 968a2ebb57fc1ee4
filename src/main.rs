//! The `switchboard` binary: `switchboard serve [--config FILE]`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard::config::Config;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Self-hosted real-time event server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file; every key can be overridden by SWITCHBOARD_<SECTION>_<KEY>.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Serve { config } = Cli::parse().command;
    raise_open_files_limit();
    let config =
        Config::load(config.as_deref(), std::env::vars()).context("loading configuration")?;
    if config.uses_default_credentials() {
        tracing::warn!("an app uses the default credentials (app-key / app-secret); set SWITCHBOARD_APP_KEY and SWITCHBOARD_APP_SECRET in production");
    }
    let addr = (config.server.host.as_str(), config.server.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {}:{}", addr.0, addr.1))?;
    let metrics_listener = if config.metrics.enabled {
        let maddr = (config.server.host.as_str(), config.metrics.port);
        Some(
            TcpListener::bind(maddr)
                .await
                .with_context(|| format!("binding metrics port {}", maddr.1))?,
        )
    } else {
        None
    };
    tracing::info!(addr = %listener.local_addr()?, "switchboard listening");
    switchboard::server::run(listener, metrics_listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Every socket is a file descriptor: the default soft limit (often 1024) would cap the
/// node far below `server.max_connections`, so it is raised to the hard limit.
fn raise_open_files_limit() {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => tracing::info!(was = soft, now, hard, "open files limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "open files limit not raised"),
        },
        Err(e) => tracing::warn!(error = %e, "open files limit unknown"),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
