//! Command line of the `whatsapp-operator` binary.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

pub use crate::telemetry::LogFormat;

#[derive(Parser, Debug)]
#[command(
    name = "whatsapp-operator",
    version,
    about = "Kubernetes operator and metrics exporter for fleets of WhatsApp sessions"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "plain", env = "LOG_FORMAT", global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller, the session API and the metrics endpoint.
    Run(Box<RunArgs>),
    /// Print the WhatsAppSession CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server (session API, /metrics, /livez, /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,

    /// Connections the HTTP server keeps open at once; more wait until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's header (also how long an idle keep-alive
    /// connection stays open).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,

    /// Seconds within which a response must be ready; otherwise 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,

    /// Seconds a client may leave a response unread (its socket full) before the connection
    /// is closed: a stalled reader does not hold a connection or its buffers for good.
    #[arg(long, env = "WRITE_TIMEOUT", default_value_t = 30)]
    pub write_timeout: u64,

    /// Bytes of kernel send buffer per connection: what a client that stops reading can pin
    /// before the write timeout starts (the kernel doubles it; its own default grows to 4 MiB).
    #[arg(long, env = "SEND_BUFFER_BYTES", default_value_t = 256 * 1024)]
    pub send_buffer_bytes: usize,

    /// Changes `GET /sessions/events` keeps for clients that reconnect (Last-Event-ID) or
    /// read slowly; a client further behind is dropped and starts again from a snapshot.
    #[arg(long, env = "STREAM_BACKLOG", default_value_t = 4096)]
    pub stream_backlog: usize,

    /// File of API keys for the session API, one per line; re-read when it changes, so keys
    /// can be rotated by adding the new one, moving clients, then removing the old one.
    #[arg(long, env = "API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,

    /// API keys, comma-separated, when no --api-key-file is given.
    #[arg(long = "api-keys", env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// Serve /metrics on this address instead of --listen (the chart's metrics port).
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Who may read /metrics: anyone who reaches it (none), or callers whose bearer token the
    /// Kubernetes API accepts and allows to get the non-resource URL /metrics (kubernetes).
    #[arg(long, env = "METRICS_AUTH", value_enum, default_value = "none")]
    pub metrics_auth: MetricsAuthMode,

    /// Emit per-session series on /metrics (turn off for very large fleets).
    #[arg(long, env = "PER_SESSION_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub per_session_metrics: bool,

    /// Watch and manage sessions in this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Worker image for sessions that do not set spec.image.
    #[arg(
        long,
        env = "DEFAULT_IMAGE",
        default_value = concat!("ghcr.io/whatsapp-operator/whatsapp-worker:", env!("CARGO_PKG_VERSION"))
    )]
    pub default_image: String,

    /// ServiceAccount of the session Pods (the worker patches its own Pod's conditions).
    #[arg(long, env = "WORKER_SERVICE_ACCOUNT")]
    pub worker_service_account: Option<String>,

    /// Namespace of the operator's own objects (id counter, leader Lease).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub operator_namespace: String,

    /// Name of the ConfigMap that holds the session id counter.
    #[arg(long, default_value = "whatsapp-operator-ids")]
    pub id_counter: String,

    /// Sessions reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,

    /// Name of this replica in Events and the leader Lease (default: host name and pid).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,

    /// Elect one leader among replicas with a Lease; only the leader reconciles and writes.
    /// Every replica serves the API and metrics.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader Lease in --operator-namespace.
    #[arg(long, default_value = "whatsapp-operator-leader")]
    pub lease_name: String,

    /// Seconds a Lease nobody renews stays taken.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,

    /// Seconds a leader keeps leading without a successful renewal.
    #[arg(long, default_value_t = 10)]
    pub renew_deadline: u64,

    /// Seconds between election attempts.
    #[arg(long, default_value_t = 2)]
    pub retry_period: u64,
}

/// `--metrics-auth`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAuthMode {
    None,
    Kubernetes,
}
