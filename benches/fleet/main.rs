//! Fleet benchmark on the local real control plane. bench/run.sh starts a fresh plane per
//! run (with the apiserver's audit log on for the operator's ServiceAccount) and calls this
//! once per run; each run writes its figures as JSON, and `--report` turns every recorded
//! run into docs/benchmarks.md. It asserts nothing: targets are reported against, not tested.
//!
//! Modules: `procs` (process stats), `watch` (what the bench's watches saw), `load` (vegeta
//! and open-loop Pod changes), `scrape` (`/metrics` as Prometheus scrapes it), `peer`
//! (kube-state-metrics), `audit` (the operator's requests), `report` (medians and targets).

mod audit;
mod load;
mod peer;
mod procs;
mod report;
mod scrape;
mod watch;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use serde_json::json;
use whatsapp_operator::k8s::crd::WhatsAppSession;

use procs::{Proc, cpu_seconds, cpu_ticks, mem_mib, stolen_since};
use report::{Mode, Run};
use scrape::{Scrapes, Target, mean, percentile};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The operator process and what the phases share.
struct Bench {
    mode: Mode,
    n: usize,
    client: Client,
    sessions: Api<WhatsAppSession>,
    pods: Api<Pod>,
    _operator: Proc,
    op_pid: u32,
    base: String,
    key: &'static str,
    plane: Vec<(String, u32)>,
    apiserver: u32,
    audit_log: String,
    vegeta: String,
    _op_kubeconfig: tempfile::NamedTempFile,
}

/// `/metrics` scrapes timed per figure: enough for the p99 to be one of a hundred.
const SCRAPES: usize = 100;
/// Pod condition changes a second while the fleet is read under change.
const CHURN: u32 = 20;
/// The plane's nice value while the read paths are measured (`procs::set_nice`).
const PLANE_NICE: i32 = 19;

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this without `--bench`: it needs a prepared plane, so it
    // only runs from bench/run.sh (`cargo bench`).
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("fleet: a benchmark, not a test; run bench/run.sh");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--report") {
        let (dir, out) = (&args[i + 1], &args[i + 2]);
        write_report(dir, out);
        return;
    }
    let mode = Mode::parse(&std::env::var("BENCH_MODE").unwrap_or("fleet".into()))
        .expect("BENCH_MODE: fleet|scale|suspended");
    let n: usize = env_or("BENCH_SESSIONS", 10_000);
    let run_file = std::env::var("BENCH_RUN_FILE").expect("BENCH_RUN_FILE: where this run's figures go");
    let steal0 = cpu_ticks();
    let bench = Bench::start(mode, n).await;
    let mut run = Run {
        mode,
        sessions: n,
        started: jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        machine: procs::machine(),
        versions: bench.versions(),
        settings: BTreeMap::new(),
        figures: BTreeMap::new(),
    };
    bench.steady(&mut run).await;
    match mode {
        Mode::Fleet => {
            bench.idle(&mut run).await;
            bench.status_latency(&mut run).await;
            let niced = bench.nice(PLANE_NICE);
            bench.session_api(&mut run).await;
            bench.metrics_and_peer(&mut run).await;
            if niced {
                bench.nice(0);
            }
        }
        Mode::Scale | Mode::Suspended => {
            let niced = bench.nice(PLANE_NICE);
            bench.metrics_unchanged(&mut run).await;
            if mode == Mode::Suspended {
                let a = load::vegeta(
                    &bench.vegeta,
                    &format!("{}/sessions/all", bench.base),
                    bench.key,
                    10,
                    10,
                    true,
                );
                run.set("http.all.gzip.p50", a.p50);
                run.set("http.all.gzip.p99", a.p99);
                run.set("http.all.gzip.max", a.max);
            }
            run.set(
                "peak_ratio",
                mem_mib(bench.op_pid, "VmHWM:") / run.figures["rss_steady_mib"],
            );
            if niced {
                bench.nice(0);
            }
        }
    }
    run.set("steal_pct", stolen_since(steal0));
    run.settings.insert(
        "build".into(),
        std::env::var("BENCH_BUILD").unwrap_or_else(|_| "unknown".into()),
    );
    run.settings.insert(
        "file".into(),
        std::path::Path::new(&run_file)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    );
    std::fs::write(&run_file, serde_json::to_string_pretty(&run).unwrap()).unwrap();
    eprintln!("wrote {run_file}");
}

/// Every run in `dir` (`*.json`), in the order of their names, into one report at `out`.
fn write_report(dir: &str, out: &str) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let runs: Vec<Run> = files
        .iter()
        .map(|p| {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    let md = report::markdown(runs);
    std::fs::write(out, &md).unwrap();
    println!("{md}");
}

impl Bench {
    /// A namespace, the operator's ServiceAccount and token, and the operator running as it.
    async fn start(mode: Mode, n: usize) -> Bench {
        let client = whatsapp_testkit::client().await;
        let ns = audit::NAMESPACE;
        let nsobj: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &nsobj)
            .await
            .unwrap();
        let sa: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": audit::SERVICE_ACCOUNT } })).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        // Everything the chart's roles grant and more: the bench counts requests, not rights.
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": { "name": "bench-whatsapp-operator" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
            "subjects": [{ "kind": "ServiceAccount", "name": audit::SERVICE_ACCOUNT, "namespace": ns }],
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        let token = whatsapp_testkit::kubectl_ok(&[
            "create",
            "token",
            audit::SERVICE_ACCOUNT,
            "-n",
            ns,
            "--duration",
            "24h",
        ]);
        let mut kubeconfig = Kubeconfig::read_from(whatsapp_testkit::kubeconfig_path()).unwrap();
        for user in &mut kubeconfig.auth_infos {
            user.auth_info = Some(kube::config::AuthInfo {
                token: Some(token.trim().to_string().into()),
                ..Default::default()
            });
        }
        let op_kubeconfig = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(op_kubeconfig.path(), serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();

        let port = whatsapp_testkit::free_port();
        let key = "bench-key";
        let operator = Proc(
            Command::new(env!("CARGO_BIN_EXE_whatsapp-operator"))
                .args([
                    "run",
                    "--namespace",
                    ns,
                    "--operator-namespace",
                    ns,
                    "--leader-elect=false",
                ])
                .args(["--listen", &format!("127.0.0.1:{port}"), "--concurrency", "32"])
                .env("KUBECONFIG", op_kubeconfig.path())
                .env("API_KEYS", key)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let op_pid = operator.0.id();
        let base = format!("http://127.0.0.1:{port}");
        whatsapp_testkit::wait_for("operator /readyz", Duration::from_secs(60), || async {
            let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        let plane = plane_pids();
        let apiserver = plane
            .iter()
            .find(|(name, _)| name == "kube-apiserver")
            .map(|(_, pid)| *pid)
            .expect("BENCH_PLANE_PIDS names the kube-apiserver");
        Bench {
            mode,
            n,
            sessions: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            client,
            _operator: operator,
            op_pid,
            base,
            key,
            plane,
            apiserver,
            audit_log: std::env::var("BENCH_AUDIT_LOG").expect("BENCH_AUDIT_LOG: the apiserver's audit log"),
            vegeta: std::env::var("BENCH_VEGETA").expect("BENCH_VEGETA: hack/tools.sh vegeta"),
            _op_kubeconfig: op_kubeconfig,
        }
    }

    /// Each component's version as its binary prints it.
    fn versions(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert(
            "whatsapp-operator".into(),
            procs::version_of(env!("CARGO_BIN_EXE_whatsapp-operator"), &["--version"]),
        );
        for (name, pid) in &self.plane {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            v.insert(name.clone(), procs::version_of(&exe, &["--version"]));
        }
        v.insert(
            "vegeta".into(),
            procs::go_module_version(&self.vegeta, "github.com/tsenart/vegeta/v12"),
        );
        if let Ok(ksm) = std::env::var("BENCH_KSM") {
            v.insert(
                "kube-state-metrics".into(),
                procs::go_module_version(&ksm, "k8s.io/kube-state-metrics/v2"),
            );
        }
        v.insert("rustc".into(), procs::version_of("rustc", &["--version"]));
        v
    }

    fn plane_pids(&self) -> Vec<u32> {
        self.plane.iter().map(|(_, pid)| *pid).collect()
    }

    fn nice(&self, nice: i32) -> bool {
        let done = procs::set_nice(&self.plane_pids(), nice);
        eprintln!("plane reniced to {nice}: {done:?}");
        done.is_some()
    }

    /// The operator's requests in [from, to): by verb into `run` under `prefix`, and the
    /// (writes, all, watches) totals.
    fn audited(
        &self,
        run: &mut Run,
        prefix: &str,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
    ) -> (f64, f64, f64) {
        let by_verb = audit::requests(&self.audit_log, from, to);
        for verb in ["create", "patch", "update", "delete", "get", "list", "watch"] {
            run.set(
                format!("audit.{prefix}.{verb}"),
                by_verb.get(verb).copied().unwrap_or(0.0),
            );
        }
        // `+ 0.0`: an empty f64 sum is -0.0.
        let writes = audit::WRITES.iter().filter_map(|v| by_verb.get(*v)).sum::<f64>() + 0.0;
        let watches = by_verb.get("watch").copied().unwrap_or(0.0);
        (writes, by_verb.values().sum::<f64>() + 0.0, watches)
    }

    /// Phase 1: Empty to steady state: every session created, its Pod running (unless suspended),
    /// its status written.
    async fn steady(&self, run: &mut Run) {
        let n = self.n;
        let suspend = self.mode == Mode::Suspended;
        let (seen, watch) = watch::sessions(self.sessions.clone(), !suspend);
        eprintln!("creating {n} sessions");
        let from = jiff::Timestamp::now();
        let op_cpu0 = cpu_seconds(self.op_pid);
        let plane_cpu0: Vec<f64> = self.plane.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(|i| {
                let sessions = self.sessions.clone();
                async move {
                    let s: WhatsAppSession = serde_json::from_value(json!({
                        "apiVersion": "whatsapp-operator.dev/v1alpha1", "kind": "WhatsAppSession",
                        "metadata": { "name": format!("s{i:06}") },
                        "spec": { "storage": { "size": "64Mi" }, "suspend": suspend },
                    }))
                    .unwrap();
                    sessions.create(&PostParams::default(), &s).await.unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<()>()
            .await;
        run.set("create_s", start.elapsed().as_secs_f64());
        let timeout = Duration::from_secs(env_or("BENCH_STEADY_TIMEOUT", 3600));
        let mut last = Instant::now();
        let reached = loop {
            let ready = seen.lock().unwrap().ready.len();
            if ready == n || start.elapsed() > timeout {
                break ready;
            }
            if last.elapsed() >= Duration::from_secs(15) {
                last = Instant::now();
                eprintln!("  {ready}/{n} at steady state ({:?})", start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        watch.abort();
        let to = jiff::Timestamp::now();
        run.set("steady_s", start.elapsed().as_secs_f64());
        run.set("not_steady", (n - reached) as f64);
        let op_cpu = cpu_seconds(self.op_pid) - op_cpu0;
        run.set("cpu_s.operator", op_cpu);
        for ((name, pid), before) in self.plane.iter().zip(plane_cpu0) {
            run.set(format!("cpu_s.{name}"), cpu_seconds(*pid) - before);
        }
        run.set("op_cpu_ms_per_session", op_cpu * 1000.0 / n as f64);
        run.set("rss_steady_mib", mem_mib(self.op_pid, "VmRSS:"));
        run.set("hwm_steady_mib", mem_mib(self.op_pid, "VmHWM:"));
        // From here the peak holds only what the later phases need.
        procs::reset_peak(self.op_pid);
        // The audit log is written as requests complete; the last ones land just after.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (writes, all, _) = self.audited(run, "steady", from, to);
        run.set("writes_per_session", writes / n as f64);
        run.set("requests_per_session", all / n as f64);
    }

    /// Phase 2: Idle: nothing changes; the operator should ask the apiserver nothing.
    async fn idle(&self, run: &mut Run) {
        procs::wait_quiet(self.apiserver).await;
        let seconds: u64 = env_or("BENCH_IDLE_S", 300);
        eprintln!("idle for {seconds} s");
        let from = jiff::Timestamp::now();
        let cpu0 = cpu_seconds(self.op_pid);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let to = jiff::Timestamp::now();
        run.set("idle_cpu_ms", (cpu_seconds(self.op_pid) - cpu0) * 1000.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, all, watches) = self.audited(run, "idle", from, to);
        run.set("idle_s", seconds as f64);
        run.set("idle_requests", all - watches);
        run.set("idle_watches", watches);
    }

    /// Phase 3: Condition change -> status written, changes sent open loop.
    async fn status_latency(&self, run: &mut Run) {
        let (seen, watch) = watch::sessions(self.sessions.clone(), true);
        let (pod_seen, pod_watch) =
            watch::pods_connected(Api::namespaced(self.client.clone(), audit::NAMESPACE));
        procs::wait_quiet(self.apiserver).await;
        let mut names: Vec<String> = seen.lock().unwrap().ready.iter().cloned().collect();
        names.sort();
        let changes: usize = env_or("BENCH_CHANGES", 1000).min(names.len());
        let rate: f64 = env_or("BENCH_CHANGE_RATE", 100.0);
        let step = (names.len() / changes.max(1)).max(1);
        let names: Vec<String> = names.into_iter().step_by(step).take(changes).collect();
        let reconciles0 = reconcile_histogram(&self.base).await;
        let (api0, op0) = (cpu_seconds(self.apiserver), cpu_seconds(self.op_pid));
        let start = Instant::now();
        let from = jiff::Timestamp::now();
        eprintln!("{} condition changes at {rate}/s, open loop", names.len());
        let sent = load::open_loop_changes(&self.pods, &names, rate).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline
            && names
                .iter()
                .any(|n| !seen.lock().unwrap().connected.contains_key(n))
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let took = start.elapsed().as_secs_f64();
        run.set(
            "changes_api_cpu_pct",
            (cpu_seconds(self.apiserver) - api0) / took * 100.0,
        );
        run.set(
            "changes_op_cpu_pct",
            (cpu_seconds(self.op_pid) - op0) / took * 100.0,
        );
        let reconciles = reconcile_histogram(&self.base).await - reconciles0;
        watch.abort();
        pod_watch.abort();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let patches = audit::status_patches(&self.audit_log, from, jiff::Timestamp::now());
        let (seen, pod_seen) = (seen.lock().unwrap(), pod_seen.lock().unwrap());
        let ms = |a: Instant, b: Instant| a.saturating_duration_since(b).as_secs_f64() * 1000.0;
        let (mut e2e, mut lag, mut answered, mut delivered, mut share) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut own, mut inside, mut patching) = (vec![], vec![], vec![]);
        let mut last_sent = start;
        for (name, c) in &sent {
            lag.push(ms(c.sent, c.due));
            last_sent = last_sent.max(c.sent);
            if let Some(a) = c.answered {
                answered.push(ms(a, c.due));
            }
            let pod = pod_seen.get(&format!("wa-{name}")).copied();
            if let Some((p, p_wall)) = pod {
                delivered.push(ms(p, c.due));
                // The operator's own share: the change delivered (to a watch) -> its status
                // patch answered, by the apiserver's clock (the same machine's).
                if let Some((received, done)) = patches.get(name).and_then(|v| v.first()) {
                    let ms = |a: &jiff::Timestamp, b: &jiff::Timestamp| {
                        a.duration_since(*b).as_secs_f64() * 1000.0
                    };
                    own.push(ms(done, &p_wall));
                    // Split: the operator until its patch reached the apiserver, and the
                    // apiserver answering it.
                    inside.push(ms(received, &p_wall));
                    patching.push(ms(done, received));
                }
            }
            let pod = pod.map(|(p, _)| p);
            if let Some(s) = seen.connected.get(name) {
                e2e.push(ms(*s, c.due));
                if let Some(p) = pod {
                    share.push(ms(*s, p));
                }
            }
        }
        let first_due = sent.values().map(|c| c.due).min().unwrap_or(start);
        run.set(
            "changes_rate",
            sent.len() as f64 / last_sent.duration_since(first_due).as_secs_f64().max(0.001),
        );
        run.set("send_lag_p99", percentile(&lag, 99.0));
        run.set("non_arrivals", (sent.len() - e2e.len()) as f64);
        run.set("op_share_missing", (sent.len() - own.len()) as f64);
        for (key, v) in [
            ("e2e", &e2e),
            ("answered", &answered),
            ("delivered", &delivered),
            ("op_share", &own),
            ("op_inside", &inside),
            ("op_patch", &patching),
            ("op_share_watched", &share),
        ] {
            run.set(format!("{key}_p50"), percentile(v, 50.0));
            run.set(format!("{key}_p99"), percentile(v, 99.0));
        }
        run.set("e2e_max", percentile(&e2e, 100.0));
        run.set("reconciles_per_change", reconciles / sent.len().max(1) as f64);
    }

    /// Phase 4: The session API at fixed rates, open loop, then while the fleet changes.
    async fn session_api(&self, run: &mut Run) {
        procs::wait_quiet(self.apiserver).await;
        let (mut ok_min, mut steal_max) = (100.0_f64, 0.0_f64);
        let mut record = |run: &mut Run, key: &str, a: load::Attack| {
            run.set(format!("http.{key}.p50"), a.p50);
            run.set(format!("http.{key}.p99"), a.p99);
            run.set(format!("http.{key}.max"), a.max);
            ok_min = ok_min.min(a.ok_pct);
            steal_max = steal_max.max(a.steal_pct);
        };
        for (key, path, rate, gzip) in [
            ("all.plain", "/sessions/all", 100, false),
            ("all.gzip", "/sessions/all", 100, true),
            ("list.plain", "/sessions", 100, false),
            ("connected.plain", "/sessions/connected", 500, false),
        ] {
            let a = load::vegeta(
                &self.vegeta,
                &format!("{}{path}", self.base),
                self.key,
                rate,
                10,
                gzip,
            );
            record(run, key, a);
        }
        run.settings.insert(
            "vegeta attack flags besides -rate and -duration".into(),
            load::SHARED_FLAGS.join(" "),
        );
        let churn = load::Churn::start(self.pods.clone(), self.churned(), CHURN);
        let a = load::vegeta(
            &self.vegeta,
            &format!("{}/sessions/all", self.base),
            self.key,
            100,
            10,
            true,
        );
        record(run, "all_churn.gzip", a);
        churn.stop().await;
        run.set("http.ok_pct_min", ok_min);
        run.set("http.steal_pct_max", steal_max);
    }

    /// The Pods the churn flips: 200 sessions'.
    fn churned(&self) -> Vec<String> {
        (0..self.n.min(200)).map(|i| format!("s{i:06}")).collect()
    }

    fn op_target(&self) -> Target {
        Target {
            url: format!("{}/metrics", self.base),
            pid: self.op_pid,
        }
    }

    /// `/metrics` of an unchanged fleet, the operator alone.
    async fn metrics_unchanged(&self, run: &mut Run) {
        procs::wait_quiet(self.apiserver).await;
        let op = self.op_target();
        for gzip in [false, true] {
            let s = Scrapes::unchanged(&op, gzip, SCRAPES).await;
            record_scrapes(run, "metrics.op.unchanged", gzip, &s);
        }
    }

    /// Phase 5: `/metrics`, the operator and kube-state-metrics on the same objects: unchanged, then
    /// each scrape after the same changes.
    async fn metrics_and_peer(&self, run: &mut Run) {
        let Ok(ksm_bin) = std::env::var("BENCH_KSM") else {
            eprintln!("BENCH_KSM unset: no peer");
            return self.metrics_unchanged(run).await;
        };
        let kubeconfig = whatsapp_testkit::kubeconfig_path().display().to_string();
        let peer = peer::start(&ksm_bin, &kubeconfig, audit::NAMESPACE, self.n * 5).await;
        run.settings
            .insert("kube-state-metrics command".into(), peer.command.clone());
        procs::wait_quiet(self.apiserver).await;
        let op = self.op_target();
        let ksm = Target {
            url: peer.url.clone(),
            pid: peer.proc.0.id(),
        };
        let mut unchanged = BTreeMap::new();
        for (who, target) in [("op", &op), ("ksm", &ksm)] {
            for gzip in [false, true] {
                let s = Scrapes::unchanged(target, gzip, SCRAPES).await;
                record_scrapes(run, &format!("metrics.{who}.unchanged"), gzip, &s);
                run.set(
                    format!("metrics.{who}.{}.kib", encoding(gzip)),
                    s.bytes as f64 / 1024.0,
                );
                run.set(format!("metrics.{who}.series"), s.series as f64);
                unchanged.insert((who, gzip), s);
            }
        }
        let churn = load::Churn::start(self.pods.clone(), self.churned(), CHURN);
        let before = churn.count();
        let t = Instant::now();
        let after = scrape::after_changes(&[&op, &ksm], SCRAPES, Duration::from_millis(150)).await;
        run.set(
            "metrics.churn_rate",
            (churn.count() - before) as f64 / t.elapsed().as_secs_f64(),
        );
        churn.stop().await;
        for (who, scrapes) in ["op", "ksm"].into_iter().zip(&after) {
            for gzip in [false, true] {
                record_scrapes(
                    run,
                    &format!("metrics.{who}.churn"),
                    gzip,
                    &scrapes[usize::from(gzip)],
                );
            }
        }
        let f = |k: String| run.figures.get(&k).copied().unwrap_or(f64::NAN);
        let mut speedups = Vec::new();
        for phase in ["unchanged", "churn"] {
            for enc in ["plain", "gzip"] {
                let op_ms = f(format!("metrics.op.{phase}.{enc}.p50"));
                let ksm_ms = f(format!("metrics.ksm.{phase}.{enc}.p50"));
                let per_series =
                    (ksm_ms / f("metrics.ksm.series".into())) / (op_ms / f("metrics.op.series".into()));
                speedups.push((format!("speedup.series.{phase}.{enc}"), per_series));
                if phase == "churn" {
                    speedups.push((format!("speedup.scrape.{phase}.{enc}"), ksm_ms / op_ms));
                    let per_byte = (ksm_ms / f(format!("metrics.ksm.{enc}.kib")))
                        / (op_ms / f(format!("metrics.op.{enc}.kib")));
                    speedups.push((format!("speedup.byte.{phase}.{enc}"), per_byte));
                    let cpu = f(format!("metrics.ksm.{phase}.{enc}.cpu_ms"))
                        / f(format!("metrics.op.{phase}.{enc}.cpu_ms"));
                    speedups.push((format!("speedup.cpu.{phase}.{enc}"), cpu));
                }
            }
        }
        for (k, v) in speedups {
            run.set(k, v);
        }
        run.set("metrics.ksm.rss_mib", mem_mib(peer.proc.0.id(), "VmRSS:"));
        run.set("rss_after_mib", mem_mib(self.op_pid, "VmRSS:"));
        run.set(
            "peak_ratio",
            mem_mib(self.op_pid, "VmHWM:") / run.figures["rss_steady_mib"],
        );
    }
}

fn encoding(gzip: bool) -> &'static str {
    if gzip { "gzip" } else { "plain" }
}

fn record_scrapes(run: &mut Run, prefix: &str, gzip: bool, s: &Scrapes) {
    let p = format!("{prefix}.{}", encoding(gzip));
    run.set(format!("{p}.p50"), percentile(&s.server_ms, 50.0));
    run.set(format!("{p}.p99"), percentile(&s.server_ms, 99.0));
    run.set(format!("{p}.client_p50"), percentile(&s.client_ms, 50.0));
    run.set(format!("{p}.client_p99"), percentile(&s.client_ms, 99.0));
    run.set(format!("{p}.cpu_ms"), mean(&s.cpu_ms));
}

/// The operator's reconcile count so far, from its `/metrics`.
async fn reconcile_histogram(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("whatsapp_operator_reconcile_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// The plane's processes, from BENCH_PLANE_PIDS ("name=pid name=pid ...").
fn plane_pids() -> Vec<(String, u32)> {
    std::env::var("BENCH_PLANE_PIDS")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
