//! `whatsapp-operator run`: wires the stores, the controller and the HTTP server together
//! under one shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::{Client, CustomResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{MetricsAuthMode, RunArgs};
use crate::http::ApiKeys;
use crate::http::metrics_auth::MetricsAuth;
use crate::http::{listener, server};
use crate::k8s::crd::WhatsAppSession;
use crate::reconcile::controller::{self, Context};
use crate::reconcile::desired::PodDefaults;
use crate::reconcile::error::ErrorCategory;
use crate::reconcile::event_recorder::{EventQueue, Publisher, Reporter};
use crate::reconcile::id_counter::IdAllocator;
use crate::reconcile::leader_election::{Elector, Leadership, LeaseConfig};
use crate::store::reflectors;
use crate::telemetry::operator_metrics::Metrics;

/// Ids taken from the counter per write (see `reconcile::id_counter`).
const ID_BLOCK: i64 = 100;
/// Events waiting to be published, at most (client-go's recorder queues 1000).
const EVENT_QUEUE: usize = 1000;
/// Events published at once: enough to keep up with a fleet that changes 100 times a second
/// while the apiserver takes a tenth of a second per write.
const EVENT_CONCURRENCY: usize = 16;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Refuse to start open before touching the cluster: the session API is never unprotected.
    let keys = ApiKeys::load(args.api_key_file.as_deref(), args.api_keys.as_deref())?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration found: set KUBECONFIG, or run in a cluster")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));

    let listener = listener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(addr = %args.listen, "HTTP server listening");

    if let Some(path) = &args.api_key_file {
        tokio::spawn(keys.clone().watch_file(path.clone(), shutdown.clone()));
    }

    let metrics = Arc::new(Metrics::new(&ErrorCategory::labels()));
    // The stores exist from the start; their watches retry until the CRD is installed.
    let (stores, feeds) = reflectors::build(client.clone(), args.namespace.as_deref());
    let state = server::AppState::new(
        metrics.clone(),
        stores.clone(),
        keys,
        args.per_session_metrics,
        args.stream_backlog,
    );
    tokio::spawn(state.publish_changes(shutdown.clone()));
    let mut state = state;
    if args.metrics_auth == MetricsAuthMode::Kubernetes {
        state.metrics_auth = MetricsAuth::kubernetes(client.clone(), metrics.clone());
    }
    let metrics_listener = match args.metrics_listen {
        Some(addr) => {
            state.metrics_apart = true;
            let l = listener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
            info!(%addr, auth = ?args.metrics_auth, "metrics listening");
            Some(l)
        }
        None => None,
    };
    let metrics_app = server::metrics_router(state.clone());
    let app = server::router(state);
    let limits = listener::Limits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        write_timeout: Duration::from_secs(args.write_timeout.max(1)),
        send_buffer: args.send_buffer_bytes.max(4096),
        ..Default::default()
    };
    let server = tokio::spawn(listener::serve(
        listener,
        app,
        limits,
        shutdown.clone().cancelled_owned(),
    ));
    if let Some(l) = metrics_listener {
        tokio::spawn(listener::serve(
            l,
            metrics_app,
            limits,
            shutdown.clone().cancelled_owned(),
        ));
    }

    if !wait_for_crd(&client, args.namespace.as_deref(), &shutdown).await {
        return finish(server).await;
    }
    for feed in [feeds.sessions, feeds.pods] {
        tokio::spawn(
            feed.take_until(shutdown.clone().cancelled_owned())
                .for_each(|_| async {}),
        );
    }
    // The controller starts only once both stores are complete: deciding on a session
    // before its Pod is known would create a Pod that already exists.
    tokio::select! {
        _ = stores.wait_until_ready() => info!("stores synced; ready"),
        _ = shutdown.cancelled() => return finish(server).await,
    }

    let leader = if args.leader_elect {
        Leadership::follower()
    } else {
        Leadership::always()
    };
    let elector = args.leader_elect.then(|| {
        let config = LeaseConfig {
            name: args.lease_name.clone(),
            identity: identity(&args),
            lease_duration: Duration::from_secs(args.lease_duration),
            renew_deadline: Duration::from_secs(args.renew_deadline.min(args.lease_duration)),
            retry_period: Duration::from_secs(args.retry_period.max(1)),
        };
        let api = Api::namespaced(client.clone(), &args.operator_namespace);
        let elector = Elector::new(api, config, leader.clone(), feeds.triggers.clone());
        tokio::spawn(elector.run(shutdown.clone()))
    });
    // Elected, the apiserver back, a relist: every session is looked at at once, rather than
    // each waiting out its resync or the error backoff it built up.
    let reconcile_all = futures::stream::unfold(feeds.reconcile_all, |mut rx| async move {
        rx.recv().await.map(|_cause| ((), rx))
    });

    let ctx = Arc::new(Context {
        client: client.clone(),
        sessions: stores.sessions.clone(),
        pods: stores.pods.clone(),
        defaults: PodDefaults {
            image: args.default_image.clone(),
            service_account: args.worker_service_account.clone(),
        },
        ids: IdAllocator::new(
            Api::namespaced(client.clone(), &args.operator_namespace),
            args.id_counter.clone(),
            ID_BLOCK,
        ),
        events: EventQueue::start(
            Publisher::new(
                client.clone(),
                Reporter {
                    controller: "whatsapp-operator".into(),
                    instance: args.instance.clone(),
                },
            ),
            EVENT_QUEUE,
            EVENT_CONCURRENCY,
        ),
        leader,
        memory: Default::default(),
        metrics,
    });
    controller::run(
        ctx,
        feeds.session_events,
        feeds.pod_events,
        feeds.pod_deletions,
        reconcile_all,
        args.concurrency,
        shutdown.clone().cancelled_owned(),
    )
    .await;
    info!("controller stopped");
    shutdown.cancel();
    if let Some(elector) = elector {
        let _ = elector.await;
    }
    finish(server).await
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    server.await.context("HTTP server task")?.context("HTTP server")?;
    info!("shut down");
    Ok(())
}

/// This replica's name: --instance (the Pod name in a cluster), else host name and pid.
fn identity(args: &RunArgs) -> String {
    args.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "whatsapp-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// SIGTERM (Kubernetes) or Ctrl-C (a person) stops everything through one token.
async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
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
    info!("shutdown signal received");
    token.cancel();
}

/// Waits until the WhatsAppSession CRD is served, saying how to install it. Returns false if
/// shutdown came first.
async fn wait_for_crd(client: &Client, namespace: Option<&str>, shutdown: &CancellationToken) -> bool {
    let api: Api<WhatsAppSession> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 404 => warn!(
                crd = WhatsAppSession::crd_name(),
                "CRD not installed; waiting (install it: whatsapp-operator crd | kubectl apply --server-side -f -)"
            ),
            Err(e) => warn!(error = %e, "cannot list WhatsAppSessions yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
