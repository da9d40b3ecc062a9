//! What the processes on this machine used: CPU time, memory, run-queue wait, the host's
//! steal, and the plane's priority. Read from /proc, so the figures are the kernel's.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped, so a failed bench leaves nothing running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A memory figure of `pid` from /proc/<pid>/status ("VmRSS:", "VmHWM:"), in MiB.
pub fn mem_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak resident memory (VmHWM) of `pid`, so the next reading holds only what
/// came after (proc(5), clear_refs "5").
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time and run-queue wait, in ms, of every thread of `pid` so far (schedstat): what the
/// process ran, and how long it was ready to run but waiting for a CPU.
pub fn sched_ms(pid: u32) -> (f64, f64) {
    let mut total = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return total;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut ns = stat.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0));
        total.0 += ns.next().unwrap_or(0.0) / 1e6;
        total.1 += ns.next().unwrap_or(0.0) / 1e6;
    }
    total
}

/// What the host's hypervisor took: (stolen, all) CPU ticks so far, from /proc/stat. This
/// machine is a virtual one; time stolen from its cores stalls whatever ran on them.
pub fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal ...
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (ticks.get(7).copied().unwrap_or(0), ticks.iter().sum())
}

/// The share of the CPUs' time the host stole since `before` (from `cpu_ticks`), in %.
pub fn stolen_since(before: (u64, u64)) -> f64 {
    let now = cpu_ticks();
    let all = now.1.saturating_sub(before.1).max(1);
    now.0.saturating_sub(before.0) as f64 * 100.0 / all as f64
}

/// Waits (up to a minute) until `pid` uses under a third of a core, so what follows measures
/// the operator rather than the plane still settling; returns its last rate (cores).
pub async fn wait_quiet(pid: u32) -> f64 {
    let mut rate = f64::NAN;
    for _ in 0..30 {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rate = (cpu_seconds(pid) - before) / 2.0;
        if rate < 0.33 {
            break;
        }
    }
    rate
}

/// Sets the nice value of `pids`: of every thread (each has its own, and new threads take
/// their creator's) and, with autogroup scheduling on (`kernel.sched_autogroup_enabled`), of
/// each process's autogroup. Each plane process leads a session of its own (`setsid` in
/// hack/cluster/lib.sh), so it has an autogroup of its own, and the kernel shares the CPUs
/// between autogroups by the group's nice value alone: renicing threads alone changes
/// nothing. Returns what was reniced, or None if any of it failed.
pub fn set_nice(pids: &[u32], nice: i32) -> Option<&'static str> {
    let tids: Vec<String> = pids
        .iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect();
    let threads = !tids.is_empty()
        && Command::new("renice")
            .args(["-n", &nice.to_string(), "-p"])
            .args(&tids)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    // "/autogroup-67 nice 0": the group, when autogroup scheduling is on.
    let group = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/autogroup"))
            .ok()
            .and_then(|g| g.split_whitespace().next().map(str::to_owned))
    };
    let ours = group("self");
    let autogroup_on =
        std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").is_ok_and(|on| on.trim() == "1");
    // A process in the bench's own group is weighed by its threads' nice; lowering that
    // group would lower the operator and the clients too.
    let apart: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| autogroup_on && group(&pid.to_string()).is_some_and(|g| Some(g) != ours))
        .collect();
    let groups = apart
        .iter()
        .all(|pid| std::fs::write(format!("/proc/{pid}/autogroup"), nice.to_string()).is_ok());
    match (threads, apart.is_empty(), groups) {
        (true, true, _) => Some("every plane thread"),
        (true, false, true) => Some("every plane thread and each plane process's autogroup"),
        _ => None,
    }
}

/// The machine, read from it: CPU model, cores, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} x {model}, {mem_gib:.0} GiB, Linux {}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        kernel.trim()
    )
}

/// The first line a binary prints for `args` (its version), or what went wrong.
pub fn version_of(bin: &str, args: &[&str]) -> String {
    match Command::new(bin).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("{bin}: {e}"),
    }
}

/// The version of `module` a Go binary was built with, as the binary records it
/// (`go version -m`): the tools built from wrapper modules print none of their own.
pub fn go_module_version(bin: &str, module: &str) -> String {
    let out = Command::new("go").args(["version", "-m", bin]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let go = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("")
        .to_string();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && (f[0] == "dep" || f[0] == "mod") && f[1] == module)
        .map_or_else(
            || format!("{module}: version not recorded"),
            |f| format!("{module} {} ({go})", f[2]),
        )
}
