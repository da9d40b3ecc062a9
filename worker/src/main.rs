use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tracing::info;
use whatsapp_contract::{AUTH_MOUNT_PATH, HEALTH_PORT, Pairing, env};
use whatsapp_worker::health::{self, Heartbeat};
use whatsapp_worker::link::Link;
use whatsapp_worker::machine::Report;
use whatsapp_worker::reporter::Reporter;
use whatsapp_worker::run;
use whatsapp_worker::store::AuthStore;
use whatsapp_worker::whatsapp::{Options, WhatsAppLink};

/// Holds one WhatsApp connection for a WhatsAppSession and reports it through its own Pod's
/// conditions. Outside a cluster give --kubeconfig and the Pod it stands for.
#[derive(Parser, Debug)]
#[command(name = "whatsapp-worker", version)]
struct Cli {
    /// The session's identifier.
    #[arg(long, env = env::SESSION_ID)]
    session_id: String,

    /// The worker's own Pod: the only object it writes (its status conditions).
    #[arg(long, env = env::POD_NAME)]
    pod_name: String,

    #[arg(long, env = env::POD_NAMESPACE)]
    pod_namespace: String,

    /// Where the pairing data lives (the session's volume).
    #[arg(long, env = env::SESSION_AUTH_DIR, default_value = AUTH_MOUNT_PATH)]
    auth_dir: PathBuf,

    /// Pair by code with this phone number (digits, country code first) instead of by QR.
    #[arg(long, env = env::PAIR_PHONE_NUMBER, value_parser = phone_number)]
    pair_phone_number: Option<String>,

    /// Kubeconfig to reach the apiserver with, outside a cluster (default: the in-cluster
    /// service account, else $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,

    /// Address of the liveness endpoint (/livez); "off" for none.
    #[arg(long, env = "HEALTH_ADDR", default_value_t = HealthAddr(Some(SocketAddr::from(([0, 0, 0, 0], HEALTH_PORT)))))]
    health_addr: HealthAddr,

    /// WebSocket endpoint instead of WhatsApp's.
    #[arg(long, env = "WHATSAPP_URL")]
    whatsapp_url: Option<String>,

    /// WhatsApp Web version to announce (e.g. 2.3000.1027934701) instead of fetching the
    /// current one from web.whatsapp.com.
    #[arg(long, env = "WHATSAPP_VERSION", value_parser = version)]
    whatsapp_version: Option<(u32, u32, u32)>,

    /// Print QR codes and pair codes for a person: auto (when stderr is a terminal), always,
    /// never. They are also in the Pod's Pairing condition and the operator's API.
    #[arg(long, env = "PRINT_QR", value_enum, default_value = "auto")]
    print_qr: PrintQr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PrintQr {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Copy, Debug)]
struct HealthAddr(Option<SocketAddr>);

impl std::fmt::Display for HealthAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for HealthAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a)))
    }
}

fn phone_number(s: &str) -> Result<String, String> {
    let ok = (7..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    ok.then(|| s.to_string())
        .ok_or_else(|| "7 to 15 digits, country code first, without '+', spaces or dashes".to_string())
}

fn version(s: &str) -> Result<(u32, u32, u32), String> {
    let parts: Vec<u32> = s
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{e}"))?;
    match parts[..] {
        [a, b, c] => Ok((a, b, c)),
        _ => Err("three numbers: primary.secondary.tertiary".into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Plain => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match work(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn work(cli: Cli) -> anyhow::Result<u8> {
    let store = AuthStore::open(&cli.auth_dir)?;
    let client = kube_client(cli.kubeconfig.as_deref()).await?;
    let reporter = Reporter::spawn(
        Api::<Pod>::namespaced(client, &cli.pod_namespace),
        cli.pod_name.clone(),
    );
    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    if let Some(addr) = cli.health_addr.0 {
        let bound = health::serve(addr, heartbeat.clone())
            .await
            .with_context(|| format!("cannot serve the liveness endpoint on {addr}"))?;
        info!(addr = %bound, "liveness endpoint listening");
    }
    let link = WhatsAppLink::open(
        &store.db_path(),
        Options {
            url: cli.whatsapp_url.clone(),
            version: cli.whatsapp_version,
            pair_phone_number: cli.pair_phone_number.clone(),
        },
    )
    .await?;
    info!(session = %cli.session_id, pod = %cli.pod_name, paired = link.was_paired(), "worker started");
    let print = match cli.print_qr {
        PrintQr::Auto => std::io::stderr().is_terminal(),
        PrintQr::Always => true,
        PrintQr::Never => false,
    };
    let mut shown: Option<String> = None;
    let exit = run::run(link, &reporter, shutdown_signal(), &heartbeat, |report| {
        if print {
            show_pairing(&cli.session_id, report, &mut shown);
        }
    })
    .await;
    if exit.wipes_store() {
        store
            .wipe()
            .context("cannot delete the pairing data after the logout")?;
    }
    info!(?exit, code = exit.code(), "worker exits");
    Ok(u8::try_from(exit.code()).unwrap_or(1))
}

/// Prints a new QR code or pair code for the person at the terminal, once per code.
fn show_pairing(session: &str, report: &Report, shown: &mut Option<String>) {
    let Some(message) = report.pairing_message.as_ref() else {
        return;
    };
    if shown.as_deref() == Some(message.code.as_str()) {
        return;
    }
    *shown = Some(message.code.clone());
    let expires = message.expires_at;
    match report.pairing {
        Pairing::QrCode => {
            let art = whatsapp_contract::qr::terminal_text(&message.code).unwrap_or_default();
            eprint!(
                "\nSession {session}: scan with WhatsApp > Linked devices > Link a device (expires {expires})\n{art}\n"
            );
        }
        Pairing::PairCode => eprintln!(
            "\nSession {session}: enter the code {} under WhatsApp > Linked devices > Link with phone number (expires {expires})\n",
            message.code
        ),
        Pairing::Paired | Pairing::NotPairing => {}
    }
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration: run in a cluster, or give --kubeconfig")?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// SIGTERM (the kubelet) or Ctrl-C (a person).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    info!("shutdown signal received");
}
