//! The container images, built without a daemon by hack/image.sh (kept when the binaries did not
//! change), checked from the images themselves: the config runs the binary as 65532:65532, the
//! binary inside is static and runs here from the unpacked root filesystem, the images stay in
//! their size budgets, and the chart's defaults name exactly these images.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the images once for every test of this binary.
fn archives() -> &'static PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        // As from a shell: what cargo sets for this test (package variables, the library path
        // of target/, the toolchain) would make the nested build look changed and start over.
        let mut image = Command::new(root().join("hack/image.sh"));
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let from_cargo = (name.starts_with("CARGO_")
                && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR"))
                || matches!(&*name, "CARGO" | "LD_LIBRARY_PATH" | "RUST_RECURSION_COUNT")
                || name.starts_with("RUSTUP_TOOLCHAIN");
            if from_cargo {
                image.env_remove(&*name);
            }
        }
        run(&mut image);
        root().join("target/images")
    })
}

struct Image {
    /// The reference the archive names, e.g. ghcr.io/whatsapp-operator/whatsapp-worker:0.1.0.
    reference: String,
    config: Value,
    /// Bytes of the compressed layers.
    compressed: u64,
    bundle: tempfile::TempDir,
}

/// Copies the archive to an OCI layout, reads its index, manifest and config, and unpacks it.
fn open(name: &str) -> Image {
    let archive = archives().join(format!("{name}-{VERSION}.tar"));
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:{VERSION}", layout.display()),
    ]));
    let blob = |digest: &str| -> Value {
        let (alg, hex) = digest.split_once(':').unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs").join(alg).join(hex)).unwrap()).unwrap()
    };
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let compressed = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    // The name the archive gives its image: what a push or `docker load` uses.
    let archived: Value = serde_json::from_str(&run(Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg("index.json")))
    .unwrap();
    let reference = archived["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bundle = tempfile::tempdir().unwrap();
    let unpacked = bundle.path().join("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:{VERSION}", layout.display()),
        unpacked.to_str().unwrap(),
    ]));
    Image {
        reference,
        config,
        compressed,
        bundle,
    }
}

fn check(name: &str, budget_mib: f64) -> Image {
    let image = open(name);
    let config = &image.config["config"];
    assert_eq!(config["User"], "65532:65532", "{name}: {config}");
    let binary = format!("/usr/local/bin/{name}");
    assert_eq!(config["Entrypoint"][0], binary.as_str(), "{name}: {config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION, "{name}");
    assert_eq!(
        labels["org.opencontainers.image.licenses"], "Apache-2.0",
        "{name}"
    );
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{name}"
    );

    let rootfs = image.bundle.path().join("bundle/rootfs");
    let inside = rootfs.join(binary.trim_start_matches('/'));
    // Static: no program interpreter, so it runs on a `scratch` image.
    let headers = run(Command::new("readelf").args(["--program-headers", inside.to_str().unwrap()]));
    assert!(
        !headers.contains("INTERP"),
        "{name} is dynamically linked:\n{headers}"
    );
    let printed = run(Command::new(&inside).arg("--version"));
    assert_eq!(
        printed.trim(),
        format!("{name} {VERSION}"),
        "{name} runs from the image"
    );
    let tmp = std::fs::metadata(rootfs.join("tmp")).expect("a /tmp");
    assert!(tmp.is_dir());
    assert!(!rootfs.join("bin/sh").exists(), "{name}: no shell");

    let mib = image.compressed as f64 / 1024.0 / 1024.0;
    println!(
        "{}: {mib:.1} MiB compressed (budget {budget_mib} MiB)",
        image.reference
    );
    assert!(mib < budget_mib, "{name} is {mib:.1} MiB compressed");
    image
}

#[test]
fn the_operator_image_runs_its_static_binary_as_nonroot() {
    check("whatsapp-operator", 30.0);
}

#[test]
fn the_worker_image_runs_its_static_binary_as_nonroot_with_tls_roots() {
    let image = check("whatsapp-worker", 40.0);
    // WhatsApp's TLS chain ends at a DigiCert root; the binary carries the roots itself
    // (webpki-roots), since a scratch image has no CA files.
    let binary = std::fs::read(
        image
            .bundle
            .path()
            .join("bundle/rootfs/usr/local/bin/whatsapp-worker"),
    )
    .unwrap();
    for root in ["DigiCert Global Root G2", "ISRG Root X1"] {
        assert!(
            binary.windows(root.len()).any(|w| w == root.as_bytes()),
            "the worker carries the {root} certificate"
        );
    }
}

#[test]
fn the_charts_defaults_name_the_images_hack_image_sh_builds() {
    let operator = open("whatsapp-operator").reference;
    let worker = open("whatsapp-worker").reference;
    let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
    let rendered = run(Command::new(helm).args([
        "template",
        "w",
        root().join("charts/whatsapp-operator").to_str().unwrap(),
        "--set",
        "apiKeys.keys={k}",
    ]));
    let images: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .map(|i| i.trim_matches('"'))
        .collect();
    assert_eq!(images, [operator.as_str()], "the operator's Deployment");
    let default_image = format!("name: DEFAULT_IMAGE, value: \"{worker}\"");
    assert!(
        rendered.contains(&default_image),
        "the sessions' worker image: {default_image}"
    );
    assert!(!rendered.contains(":latest"), "no latest tags");
}
