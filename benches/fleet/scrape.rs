//! Scrapes of a `/metrics` endpoint as Prometheus makes them: one kept-alive connection,
//! gzip when asked, the body inflated and parsed by the client. Each scrape records the
//! server's time (request sent -> last byte in), the client's (inflate + parse), and the
//! server process's CPU time meanwhile.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::procs::sched_ms;

/// A `/metrics` target: where, whose process, and how to encode.
pub struct Target {
    pub url: String,
    pub pid: u32,
}

/// Scrapes of one target in one encoding.
#[derive(Default)]
pub struct Scrapes {
    pub server_ms: Vec<f64>,
    pub client_ms: Vec<f64>,
    pub cpu_ms: Vec<f64>,
    /// Of the last scrape: bytes sent, series parsed.
    pub bytes: usize,
    pub series: usize,
}

/// Parses the text exposition: every sample line's value, as a scraper must. Returns the
/// number of samples.
fn parse(text: &str) -> usize {
    let mut samples = 0;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = line.rsplit_once(' ').map_or("", |(_, v)| v);
        sum += value.parse::<f64>().unwrap_or(0.0);
        samples += 1;
    }
    std::hint::black_box(sum);
    samples
}

impl Scrapes {
    /// One scrape of `target`, asking for gzip if `gzip`.
    pub async fn scrape(&mut self, http: &reqwest::Client, target: &Target, gzip: bool) {
        let cpu0 = sched_ms(target.pid).0;
        let t = Instant::now();
        let mut req = http.get(&target.url);
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        let resp = req.send().await.expect("scrape");
        let compressed = resp
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        let body = resp.bytes().await.expect("scrape body");
        let server = t.elapsed();
        let cpu = sched_ms(target.pid).0 - cpu0;
        let c = Instant::now();
        let text = if compressed {
            let mut out = String::with_capacity(body.len() * 12);
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut out)
                .expect("gzip body inflates");
            out
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        self.series = parse(&text);
        self.client_ms.push(c.elapsed().as_secs_f64() * 1000.0);
        self.server_ms.push(server.as_secs_f64() * 1000.0);
        self.cpu_ms.push(cpu);
        self.bytes = body.len();
    }

    /// `n` scrapes one after the other, after one untimed scrape (which renders, or
    /// compresses, what changed since the last one in that encoding).
    pub async fn unchanged(target: &Target, gzip: bool, n: usize) -> Scrapes {
        let http = reqwest::Client::new();
        let mut warm = Scrapes::default();
        warm.scrape(&http, target, gzip).await;
        let mut s = Scrapes::default();
        for _ in 0..n {
            s.scrape(&http, target, gzip).await;
        }
        s
    }
}

/// `n` rounds, each scraping every target in both encodings `pause` after the last scrape,
/// while the fleet changes: each scrape sees changes the one before did not. Returns, per
/// target, [plain, gzip].
pub async fn after_changes(targets: &[&Target], n: usize, pause: Duration) -> Vec<[Scrapes; 2]> {
    let http = reqwest::Client::new();
    let mut out: Vec<[Scrapes; 2]> = targets.iter().map(|_| Default::default()).collect();
    for _ in 0..n {
        for (t, scrapes) in targets.iter().zip(out.iter_mut()) {
            for gzip in [false, true] {
                tokio::time::sleep(pause).await;
                scrapes[usize::from(gzip)].scrape(&http, t, gzip).await;
            }
        }
    }
    out
}

/// The `p`th percentile of `values` (nearest rank).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = (((p / 100.0) * (v.len() - 1) as f64).round() as usize).min(v.len() - 1);
    v[i]
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
