//! The objects a session owns, built by pure functions from the session and the operator's
//! settings; the controller only decides when to apply them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use whatsapp_contract::{HEALTH_PORT, LIVENESS_PATH, SHUTDOWN_BUDGET, env as worker_env};

use crate::k8s::crd::{ReclaimPolicy, WhatsAppSession};
use crate::k8s::names::{
    MANAGED_BY, MANAGED_BY_LABEL, SESSION_LABEL, SPEC_HASH_ANNOTATION, pod_name, pvc_name,
};

use whatsapp_contract::AUTH_MOUNT_PATH;
const DEFAULT_STORAGE_SIZE: &str = "1Gi";
/// Non-root ids for the restricted Pod Security profile; fsGroup makes the volume writable.
const WORKER_UID: i64 = 65532;
/// Time the kubelet gives a stopping worker before killing it: the worker's own shutdown
/// budget (report Closing, flush the store) and a margin.
const GRACE_PERIOD_SECONDS: i64 = SHUTDOWN_BUDGET.as_secs() as i64 + 5;
/// Environment variables of the worker contract; the session's `env` cannot replace them.
const CONTRACT_ENV: [&str; 5] = [
    worker_env::SESSION_ID,
    worker_env::POD_NAME,
    worker_env::POD_NAMESPACE,
    worker_env::SESSION_AUTH_DIR,
    worker_env::PAIR_PHONE_NUMBER,
];

/// Operator-wide settings that shape every session's Pod.
#[derive(Clone, Debug)]
pub struct PodDefaults {
    pub image: String,
    pub service_account: Option<String>,
}

pub fn reclaim_policy(session: &WhatsAppSession) -> ReclaimPolicy {
    session
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.reclaim_policy)
        .unwrap_or_default()
}

fn labels(session: &WhatsAppSession) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "whatsapp-session".into()),
        ("app.kubernetes.io/instance".into(), session.name_any()),
        (MANAGED_BY_LABEL.into(), MANAGED_BY.into()),
        (SESSION_LABEL.into(), session.name_any()),
    ])
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Pod that runs the session's worker. Its name is fixed per session, so there can
/// never be two Pods for one session.
pub fn desired_pod(session: &WhatsAppSession, defaults: &PodDefaults) -> Pod {
    let spec = &session.spec;
    let value_env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    let mut env = vec![
        value_env(worker_env::SESSION_ID, session.session_id()),
        field_env(worker_env::POD_NAME, "metadata.name"),
        field_env(worker_env::POD_NAMESPACE, "metadata.namespace"),
        value_env(worker_env::SESSION_AUTH_DIR, AUTH_MOUNT_PATH.into()),
    ];
    if let Some(phone) = spec.pairing.as_ref().and_then(|p| p.phone_number.clone()) {
        env.push(value_env(worker_env::PAIR_PHONE_NUMBER, phone));
    }
    // Kubernetes keeps the last of duplicate names, so the session's entries that name a
    // contract variable are dropped rather than allowed to replace ours.
    env.extend(
        spec.env
            .iter()
            .flatten()
            .filter(|e| !CONTRACT_ENV.contains(&e.name.as_str()))
            .cloned(),
    );

    let container = Container {
        name: "worker".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| defaults.image.clone())),
        env: Some(env),
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "auth".into(),
                mount_path: AUTH_MOUNT_PATH.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: i32::from(HEALTH_PORT),
            ..Default::default()
        }]),
        // The worker answers while its event loop turns; a wedged worker is restarted (the
        // Pod fails, and the operator replaces it with backoff).
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(LIVENESS_PATH.into()),
                port: IntOrString::String("health".into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(20),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    let pod_spec = PodSpec {
        containers: vec![container],
        // The operator, not the kubelet, restarts a dead worker: it counts restarts, backs off,
        // and does not restart a session that was logged out.
        restart_policy: Some("Never".into()),
        termination_grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
        service_account_name: defaults.service_account.clone(),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(WORKER_UID),
            run_as_group: Some(WORKER_UID),
            fs_group: Some(WORKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "auth".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc_name(session),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let hash = spec_hash(&pod_spec);

    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(session)),
            namespace: session.namespace(),
            labels: Some(labels(session)),
            annotations: Some(BTreeMap::from([(SPEC_HASH_ANNOTATION.into(), hash)])),
            owner_references: session.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        ..Default::default()
    }
}

/// The claim that keeps the pairing data. It has no owner reference on purpose: the garbage
/// collector must never delete pairing data; the finalizer does, and only under `Delete`.
pub fn desired_pvc(session: &WhatsAppSession) -> PersistentVolumeClaim {
    let storage = session.spec.storage.clone().unwrap_or_default();
    let size = storage.size.unwrap_or_else(|| DEFAULT_STORAGE_SIZE.into());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(pvc_name(session)),
            namespace: session.namespace(),
            labels: Some(labels(session)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(size))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Stable (FNV-1a 64) hash of a Pod spec's JSON form: equal specs give equal hashes across
/// operator versions and restarts, unlike std's randomly seeded hasher.
fn spec_hash(spec: &PodSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a PodSpec always serializes");
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{SessionStorage, WhatsAppSessionSpec};
    use crate::k8s::names::pod_spec_hash;

    fn session(spec: WhatsAppSessionSpec) -> WhatsAppSession {
        let mut s = WhatsAppSession::new("alpha", spec);
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("uid-1".into());
        s
    }

    fn defaults() -> PodDefaults {
        PodDefaults {
            image: "worker:1".into(),
            service_account: Some("worker".into()),
        }
    }

    fn env_of(pod: &Pod) -> Vec<EnvVar> {
        pod.spec.as_ref().unwrap().containers[0].env.clone().unwrap()
    }

    #[test]
    fn pod_carries_the_worker_contract() {
        let pod = desired_pod(&session(Default::default()), &defaults());
        assert_eq!(pod.metadata.name.as_deref(), Some("wa-alpha"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[SESSION_LABEL], "alpha");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("WhatsAppSession", "uid-1", Some(true))
        );
        let env = env_of(&pod);
        assert_eq!(env[0].value.as_deref(), Some("alpha"));
        assert_eq!(
            env[1]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );
        assert_eq!(
            env[2]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.namespace"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("worker:1"));
        assert_eq!(spec.service_account_name.as_deref(), Some("worker"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let claim = spec.volumes.unwrap()[0].persistent_volume_claim.clone().unwrap();
        assert_eq!(claim.claim_name, "wa-alpha-auth");
    }

    #[test]
    fn pod_is_restricted() {
        let spec = desired_pod(&session(Default::default()), &defaults())
            .spec
            .unwrap();
        let psc = spec.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let csc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(csc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    }

    #[test]
    fn session_spec_reaches_the_pod_but_cannot_override_the_contract() {
        let spec = WhatsAppSessionSpec {
            session_id: Some("whatsapp_connection".into()),
            image: Some("custom:2".into()),
            env: Some(vec![
                EnvVar {
                    name: "SESSION_ID".into(),
                    value: Some("spoofed".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "LOG_LEVEL".into(),
                    value: Some("debug".into()),
                    ..Default::default()
                },
            ]),
            node_selector: Some(BTreeMap::from([("type".into(), "kwok".into())])),
            ..Default::default()
        };
        let pod = desired_pod(&session(spec), &defaults());
        let env = env_of(&pod);
        let ids: Vec<_> = env.iter().filter(|e| e.name == "SESSION_ID").collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].value.as_deref(), Some("whatsapp_connection"));
        assert!(env.iter().any(|e| e.name == "LOG_LEVEL"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("custom:2"));
        assert_eq!(spec.node_selector.unwrap()["type"], "kwok");
    }

    #[test]
    fn pairing_phone_reaches_the_worker_only_through_spec_pairing() {
        let plain = desired_pod(&session(Default::default()), &defaults());
        assert!(env_of(&plain).iter().all(|e| e.name != "PAIR_PHONE_NUMBER"));
        let spec = WhatsAppSessionSpec {
            pairing: Some(crate::k8s::crd::SessionPairing {
                phone_number: Some("6281234567890".into()),
            }),
            env: Some(vec![EnvVar {
                name: "PAIR_PHONE_NUMBER".into(),
                value: Some("15550000000".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let env = env_of(&desired_pod(&session(spec), &defaults()));
        let phones: Vec<_> = env.iter().filter(|e| e.name == "PAIR_PHONE_NUMBER").collect();
        assert_eq!(phones.len(), 1);
        assert_eq!(phones[0].value.as_deref(), Some("6281234567890"));
    }

    #[test]
    fn the_pod_gives_the_worker_time_to_shut_down_and_probes_its_liveness() {
        let spec = desired_pod(&session(Default::default()), &defaults())
            .spec
            .unwrap();
        let grace = spec.termination_grace_period_seconds.unwrap();
        assert!(grace as u64 > SHUTDOWN_BUDGET.as_secs(), "{grace}");
        let container = &spec.containers[0];
        let probe = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some(LIVENESS_PATH));
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!(probe.port, IntOrString::String(port.name.clone().unwrap()));
        assert_eq!(port.container_port, i32::from(HEALTH_PORT));
    }

    #[test]
    fn spec_hash_changes_with_the_spec_only() {
        let a = desired_pod(&session(Default::default()), &defaults());
        let b = desired_pod(&session(Default::default()), &defaults());
        assert_eq!(pod_spec_hash(&a), pod_spec_hash(&b));
        let c = desired_pod(
            &session(WhatsAppSessionSpec {
                image: Some("x:2".into()),
                ..Default::default()
            }),
            &defaults(),
        );
        assert_ne!(pod_spec_hash(&a), pod_spec_hash(&c));
    }

    #[test]
    fn claim_has_no_owner_so_pairing_data_is_never_garbage_collected() {
        let pvc = desired_pvc(&session(Default::default()));
        assert_eq!(pvc.metadata.name.as_deref(), Some("wa-alpha-auth"));
        assert!(pvc.metadata.owner_references.is_none());
        let storage = &pvc
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(storage.0, "1Gi");
        let sized = desired_pvc(&session(WhatsAppSessionSpec {
            storage: Some(SessionStorage {
                size: Some("500Mi".into()),
                storage_class_name: Some("fast".into()),
                reclaim_policy: Some(ReclaimPolicy::Delete),
            }),
            ..Default::default()
        }));
        let spec = sized.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "500Mi");
    }

    #[test]
    fn reclaim_policy_defaults_to_retain() {
        assert_eq!(
            reclaim_policy(&session(Default::default())),
            ReclaimPolicy::Retain
        );
    }
}
