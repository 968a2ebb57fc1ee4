//! The `switchboard` binary: `switchboard serve [--config FILE]`, and for operators
//! `switchboard config check|print|example` and `switchboard apps list|get|create|update|delete`.

mod apps_cli;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchboard::config::{keys, Config, LogFormat};
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
    Serve(ConfigFile),
    /// Check, show or write the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// List, show, create, change or delete apps through a running server's admin API.
    Apps(apps_cli::AppsArgs),
}

#[derive(Args)]
struct ConfigFile {
    /// TOML configuration file; every key can be overridden by SWITCHBOARD_<SECTION>_<KEY>.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration (file and SWITCHBOARD_* variables) and exit: 0 when it is
    /// usable, 2 with the reason when not.
    Check(ConfigFile),
    /// Print the effective configuration, each value with its origin (default, file, env),
    /// secrets masked.
    Print(ConfigFile),
    /// Print a commented example file with every key and its default.
    Example,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(ConfigFile { config }) => serve(config),
        Command::Apps(args) => apps_cli::run(args),
        Command::Config { action } => match action {
            ConfigAction::Example => {
                print!("{}", keys::EXAMPLE);
                ExitCode::SUCCESS
            }
            ConfigAction::Check(ConfigFile { config }) => match load(config.as_deref()) {
                Ok((c, _)) => {
                    println!(
                        "configuration is valid: {} app(s), listening on {}:{}",
                        c.all_apps().count(),
                        c.server.host,
                        c.server.port
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            ConfigAction::Print(ConfigFile { config }) => match load(config.as_deref()) {
                Ok((c, origins)) => {
                    print!("{}", c.describe(&origins));
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
        },
    }
}

/// The configuration, or the exit code after saying on stderr why it cannot be used.
fn load(
    file: Option<&std::path::Path>,
) -> Result<(Config, switchboard::config::Origins), ExitCode> {
    Config::load_traced(file, std::env::vars()).map_err(|e| {
        eprintln!("switchboard: {e}");
        ExitCode::from(2)
    })
}

fn serve(file: Option<PathBuf>) -> ExitCode {
    // Until the configuration is read, the format comes from the environment alone, so that
    // even a configuration error is a JSON line for a shipper that asked for JSON.
    let early = match std::env::var("SWITCHBOARD_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let config = match Config::load(file.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            init_logs(early);
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The server runs on a worker, not on the thread that blocks on it: a connection the
    // accept loop spawns then starts on that worker's own queue, without a wake-up of
    // another thread (BENCHMARKS.md, issue 15: server CPU per connect).
    match runtime.block_on(runtime.spawn(run(config))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("the server task failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    if config.uses_default_credentials() {
        tracing::warn!("an app uses the default credentials (app-key / app-secret); set SWITCHBOARD_APP_KEY and SWITCHBOARD_APP_SECRET in production");
    }
    let addr = (config.server.host.as_str(), config.server.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", addr.0, addr.1))?;
    let metrics_listener = if config.metrics.enabled {
        let maddr = (config.server.host.as_str(), config.metrics.port);
        Some(TcpListener::bind(maddr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}:{} (metrics.port): {e}",
                maddr.0,
                maddr.1
            )
        })?)
    } else {
        None
    };
    // "switchboard listening" is logged by the server once everything it needs is open.
    switchboard::server::run(listener, metrics_listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Text for people (colours only when stderr is a terminal), or JSON lines for log shippers.
fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // stderr, as log lines are not the program's output (`config print` writes stdout).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}

/// Every socket is a file descriptor: the default soft limit (often 1024) would cap the
/// node far below `server.max_connections`, so it is raised to the hard limit.
fn raise_open_files_limit() {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => tracing::debug!(was = soft, now, hard, "open files limit"),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        // clap checks its definitions (unique names, ...) only when a command is parsed:
        // this finds a clash before a user's `--help` panics on it.
        super::Cli::command().debug_assert();
    }
}
