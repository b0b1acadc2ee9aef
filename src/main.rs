//! The `bigfoot` command line: `serve` and `check`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bigfoot::config::Config;
use bigfoot::config::secrets::Secrets;
use bigfoot::control::auth::{self, Role};
use bigfoot::deliver::token::{Signer, Target, unix_now};
use bigfoot::server;
use bigfoot::transcode::{self, select};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bigfoot",
    version,
    about = "Live media server: RTMP in, HLS out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Override `server.rtmp_listen` (port 0 picks a free port).
        #[arg(long)]
        rtmp_listen: Option<SocketAddr>,
        /// Override `server.http_listen` (port 0 picks a free port).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// Override `server.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print a signed, expiring playback URL for a stream.
    Sign {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Stream name (not its key).
        #[arg(long)]
        stream: String,
        /// Lifetime in seconds (default: `playback.default_ttl_secs`).
        #[arg(long)]
        ttl: Option<u64>,
        /// The DASH manifest instead of the HLS master playlist.
        #[arg(long, conflicts_with = "thumbnail")]
        dash: bool,
        /// A URL that only opens the stream's thumbnail.
        #[arg(long)]
        thumbnail: bool,
        /// Bind the URL to this client address.
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
        /// Base URL instead of `server.public_url` (e.g. `http://host:8080`).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Print an HS256 token for the control API (for operators and tests).
    Token {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// `admin`, `operator` or `viewer`.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The token's subject (`sub`): who it is for.
        #[arg(long, default_value = "bigfoot-cli")]
        subject: String,
    },
    /// Validate a config file and report the GStreamer elements it uses.
    Check {
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            rtmp_listen,
            http_listen,
            data_dir,
        } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|mut config| {
                if let Some(addr) = rtmp_listen {
                    config.server.rtmp_listen = addr;
                }
                if let Some(addr) = http_listen {
                    config.server.http_listen = addr;
                }
                if let Some(dir) = data_dir {
                    config.server.data_dir = dir;
                }
                serve(config)
            }),
        Command::Check { config } => check(&config),
        Command::Token {
            config,
            role,
            ttl,
            subject,
        } => token(&config, role, ttl, &subject),
        Command::Sign {
            config,
            stream,
            ttl,
            dash,
            thumbnail,
            client_ip,
            base_url,
        } => {
            let target = if dash {
                Target::Dash
            } else if thumbnail {
                Target::Thumbnail
            } else {
                Target::Hls
            };
            sign(&config, &stream, ttl, target, client_ip, base_url)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bigfoot: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause its parent already quotes.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let running = server::start(config).await?;
        wait_for_signal().await;
        running.shutdown(grace).await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn sign(
    path: &std::path::Path,
    stream: &str,
    ttl: Option<u64>,
    target: Target,
    client_ip: Option<std::net::IpAddr>,
    base_url: Option<String>,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if !bigfoot::config::validate::is_valid_name(stream) {
        anyhow::bail!("`{stream}` is not a valid stream name");
    }
    let catalog = bigfoot::control::catalog::Catalog::load(&config)?;
    if catalog.get(stream).is_none() {
        anyhow::bail!(
            "no stream `{stream}` in {} or among the streams created through the API",
            path.display()
        );
    }
    let secrets = Secrets::load_or_create(&config)?;
    let signer = Signer::from_secrets(&secrets, &config.playback);
    let ttl = ttl.unwrap_or(config.playback.default_ttl_secs);
    if ttl == 0 || ttl > MAX_SIGN_TTL_SECS {
        anyhow::bail!("--ttl must be between 1 and {MAX_SIGN_TTL_SECS} seconds (a year)");
    }
    let expires = unix_now().saturating_add(ttl);
    let url = signer
        .url(
            &base_url.unwrap_or_else(|| server::public_base_url(&config)),
            stream,
            target,
            expires,
            client_ip,
        )
        .context("the active signing key is missing from playback.signing_keys")?;
    print_out(&format!("{url}\n"));
    Ok(())
}

fn parse_role(name: &str) -> Result<Role, String> {
    Role::from_name(name).ok_or_else(|| format!("`{name}` is not admin, operator or viewer"))
}

fn token(path: &std::path::Path, role: Role, ttl: u64, subject: &str) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if subject.is_empty() {
        anyhow::bail!("--subject must not be empty");
    }
    let secrets = Secrets::load_or_create(&config)?;
    let token = auth::mint(
        &config.api,
        &secrets.jwt_secret,
        role,
        subject,
        unix_now(),
        ttl,
    )?;
    print_out(&format!("{token}\n"));
    Ok(())
}

/// The longest lifetime `bigfoot sign` grants: a year.
const MAX_SIGN_TTL_SECS: u64 = 366 * 24 * 3600;

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let mut out = String::new();
    let _ = writeln!(out, "config {}: valid", path.display());
    let _ = writeln!(
        out,
        "streams: {}",
        config
            .streams
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    transcode::init()?;
    let dir = config.pipelines_dir();
    let reports = select::survey(&dir, &server::probe_settings(&config));
    out.push_str(&select::describe(&dir, &reports));
    let missing: Vec<&str> = transcode::pipeline::FIXED_ELEMENTS
        .iter()
        .copied()
        .filter(|f| gst::ElementFactory::find(f).is_none())
        .collect();
    let _ = match missing.as_slice() {
        [] => writeln!(out, "pipeline elements: ok"),
        _ => writeln!(out, "pipeline elements: MISSING {}", missing.join(", ")),
    };
    let t = &config.transcode;
    let fallback = if t.fallback { "on" } else { "off" };
    let _ = writeln!(
        out,
        "configured encoder: {} (fallback {fallback})",
        t.encoder
    );
    print_out(&out);
    let choice = server::load_backend(&config)?;
    print_out(&format!(
        "encoder in use: {} ({})\n",
        choice.backend.name, choice.backend.description
    ));
    print_out("ready to serve\n");
    Ok(())
}
