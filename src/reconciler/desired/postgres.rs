//! The PostgreSQL instances of a cluster: one StatefulSet per shard
//! (`<cluster>-shard<i>`) and one for the catalog (`<cluster>-catalog`),
//! each with a headless Service (pod DNS, replication), a client Service
//! (the primary: pod ordinal 0), a PodDisruptionBudget; and one ConfigMap
//! of PostgreSQL settings and init scripts shared by all of them.
//!
//! Standbys (ordinal ≥ 1) are cloned from ordinal 0 with `pg_basebackup -R`
//! by an init container and stream from it; failover is not automatic.
//! The image is the official `postgres` image (its entrypoint runs initdb,
//! the scripts under `/docker-entrypoint-initdb.d`, then PostgreSQL).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretKeySelector, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{checksum, selector, to_object, Ctx, Object, SpecError};
use crate::reconciler::crd::{PostgresCluster, Resources, Storage};

/// PostgreSQL's port in every pod and client Service.
pub const PG_PORT: i32 = 5432;

/// Settings the reconciler owns (online resharding needs logical
/// decoding and slots; two-phase commit needs prepared transactions).
const OWNED: [(&str, &str); 5] = [
    ("wal_level", "logical"),
    ("max_prepared_transactions", "100"),
    ("max_replication_slots", "16"),
    ("max_wal_senders", "16"),
    ("listen_addresses", "'*'"),
];

/// Runs once at initdb: replication connections for standbys and the
/// split job, and the settings file included from the ConfigMap.
const INIT_SCRIPT: &str = r#"#!/bin/sh
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
echo "include_if_exists = '/etc/pgrouter/postgresql.conf'" >> "$PGDATA/postgresql.conf"
"#;

/// Init container of a standby: clone ordinal 0 once.
const CLONE_SCRIPT: &str = r#"set -e
if [ "${POD_NAME##*-}" != "0" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  until PGPASSWORD="$POSTGRES_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U postgres -D "$PGDATA" -R -X stream -c fast; do
    rm -rf "$PGDATA"; sleep 2
  done
fi
"#;

/// Mount path of the PostgreSQL data volume; `PGDATA` is a directory in it.
const DATA: &str = "/var/lib/postgresql/data";

/// The client Service host of shard `i`: `<cluster>-shard<i>.<namespace>.svc`.
pub fn shard_host(ctx: &Ctx, i: u32) -> String {
    format!("{}-shard{i}.{}.svc", ctx.name, ctx.namespace)
}

/// The catalog DSN (libpq key=value, no password: routers and jobs get it
/// from the `<cluster>-postgres` Secret through the environment).
pub fn catalog_dsn(ctx: &Ctx) -> String {
    format!(
        "host={}-catalog.{}.svc port={PG_PORT} user=postgres dbname=postgres",
        ctx.name, ctx.namespace
    )
}

/// The Secret holding the `postgres` role's password (key `password`),
/// created by the user (`docs/kubernetes.md`).
pub fn password_secret(ctx: &Ctx) -> String {
    format!("{}-postgres", ctx.name)
}

/// The shared ConfigMap, then per shard and the catalog: headless and
/// client Services, StatefulSet, PodDisruptionBudget.
///
/// Errors: [`SpecError::Invalid`] for a parameter the reconciler owns.
pub fn postgres_objects(ctx: &Ctx, pc: &PostgresCluster) -> Result<Vec<Object>, SpecError> {
    let (cm, sum) = settings(ctx, pc)?;
    let mut out = vec![to_object("ConfigMap", &cm)?];
    for i in 0..pc.spec.shards.count {
        out.extend(shard_instance(ctx, pc, i, &sum)?);
    }
    let catalog = Instance {
        name: format!("{}-catalog", ctx.name),
        labels: ctx.labels("catalog"),
        replicas: 1,
        storage: &pc.spec.catalog.storage,
        resources: &pc.spec.catalog.resources,
    };
    out.extend(catalog.objects(ctx, &pc.spec.shards.image, &settings_name(ctx), &sum)?);
    Ok(out)
}

/// The objects of shard `i` alone (Services, StatefulSet, PDB), as
/// [`postgres_objects`] gives them for `i < count`: what a split job
/// bootstraps for a new target shard `shard{count}` (the settings
/// ConfigMap is the cluster's).
///
/// Errors: as [`postgres_objects`].
pub fn shard_objects(ctx: &Ctx, pc: &PostgresCluster, i: u32) -> Result<Vec<Object>, SpecError> {
    let (_, sum) = settings(ctx, pc)?;
    shard_instance(ctx, pc, i, &sum)
}

fn settings_name(ctx: &Ctx) -> String {
    format!("{}-postgres-config", ctx.name)
}

/// The settings ConfigMap and the checksum of its `postgresql.conf`.
fn settings(ctx: &Ctx, pc: &PostgresCluster) -> Result<(ConfigMap, String), SpecError> {
    let s = &pc.spec.shards;
    let mut conf = String::from("# Generated by pg-router-operator.\n");
    for (k, v) in OWNED {
        conf.push_str(&format!("{k} = {v}\n"));
    }
    for (k, v) in &s.parameters {
        if OWNED.iter().any(|(o, _)| o.eq_ignore_ascii_case(k)) {
            return Err(SpecError::Invalid {
                field: "shards.parameters",
                message: format!("{k} is set by the reconciler"),
            });
        }
        conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    let cm = ConfigMap {
        metadata: ctx.meta(&settings_name(ctx), &ctx.labels("postgres")),
        data: Some(BTreeMap::from([
            ("postgresql.conf".to_string(), conf.clone()),
            ("10-pgrouter.sh".to_string(), INIT_SCRIPT.to_string()),
        ])),
        ..ConfigMap::default()
    };
    Ok((cm, checksum(&conf)))
}

fn shard_instance(
    ctx: &Ctx,
    pc: &PostgresCluster,
    i: u32,
    sum: &str,
) -> Result<Vec<Object>, SpecError> {
    let s = &pc.spec.shards;
    let mut labels = ctx.labels("shard");
    labels.insert("pgrouter.io/shard".into(), format!("shard{i}"));
    let inst = Instance {
        name: format!("{}-shard{i}", ctx.name),
        labels,
        replicas: s.replicas,
        storage: &s.storage,
        resources: &s.resources,
    };
    inst.objects(ctx, &s.image, &settings_name(ctx), sum)
}

/// One PostgreSQL StatefulSet and what goes with it.
struct Instance<'a> {
    name: String,
    labels: BTreeMap<String, String>,
    replicas: u32,
    storage: &'a Storage,
    resources: &'a Resources,
}

impl Instance<'_> {
    fn objects(
        &self,
        ctx: &Ctx,
        image: &str,
        config_map: &str,
        sum: &str,
    ) -> Result<Vec<Object>, SpecError> {
        let headless = format!("{}-hl", self.name);
        let port = ServicePort {
            name: Some("postgres".into()),
            port: PG_PORT,
            target_port: Some(IntOrString::String("postgres".into())),
            ..ServicePort::default()
        };
        let hl = Service {
            metadata: ctx.meta(&headless, &self.labels),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                selector: Some(self.labels.clone()),
                ports: Some(vec![port.clone()]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        // The client Service reaches the primary only.
        let mut primary = self.labels.clone();
        primary.insert(
            "statefulset.kubernetes.io/pod-name".into(),
            format!("{}-0", self.name),
        );
        let client = Service {
            metadata: ctx.meta(&self.name, &self.labels),
            spec: Some(ServiceSpec {
                selector: Some(primary),
                ports: Some(vec![port]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let pdb = PodDisruptionBudget {
            metadata: ctx.meta(&self.name, &self.labels),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(selector(&self.labels)),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        };
        let sts = self.stateful_set(ctx, image, config_map, &headless, sum);
        Ok(vec![
            to_object("Service", &hl)?,
            to_object("Service", &client)?,
            to_object("StatefulSet", &sts)?,
            to_object("PodDisruptionBudget", &pdb)?,
        ])
    }

    fn stateful_set(
        &self,
        ctx: &Ctx,
        image: &str,
        config_map: &str,
        headless: &str,
        sum: &str,
    ) -> StatefulSet {
        let env = vec![
            password_env(ctx, "POSTGRES_PASSWORD"),
            env_value("PGDATA", &format!("{DATA}/pgdata")),
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            env_value(
                "PRIMARY_HOST",
                &format!("{}-0.{headless}.{}.svc", self.name, ctx.namespace),
            ),
        ];
        let ready = Probe {
            exec: Some(ExecAction {
                command: Some(
                    [
                        "pg_isready",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        "5432",
                        "-U",
                        "postgres",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        };
        let live = Probe {
            initial_delay_seconds: Some(30),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..ready.clone()
        };
        let data_mount = VolumeMount {
            name: "data".into(),
            mount_path: DATA.into(),
            ..VolumeMount::default()
        };
        let postgres = Container {
            name: "postgres".into(),
            image: Some(image.to_string()),
            env: Some(env.clone()),
            ports: Some(vec![ContainerPort {
                name: Some("postgres".into()),
                container_port: PG_PORT,
                ..ContainerPort::default()
            }]),
            readiness_probe: Some(ready),
            liveness_probe: Some(live),
            resources: Some(resources(self.resources)),
            volume_mounts: Some(vec![
                data_mount.clone(),
                VolumeMount {
                    name: "config".into(),
                    mount_path: "/etc/pgrouter".into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: "config".into(),
                    mount_path: "/docker-entrypoint-initdb.d/10-pgrouter.sh".into(),
                    sub_path: Some("10-pgrouter.sh".into()),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            ]),
            ..Container::default()
        };
        let clone = Container {
            name: "clone-standby".into(),
            image: Some(image.to_string()),
            command: Some(vec!["sh".into(), "-c".into(), CLONE_SCRIPT.into()]),
            env: Some(env),
            volume_mounts: Some(vec![data_mount]),
            ..Container::default()
        };
        let anti = PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(selector(&self.labels)),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        };
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(self.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: self.storage.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(self.storage.size.clone()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        };
        StatefulSet {
            metadata: ctx.meta(&self.name, &self.labels),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.replicas as i32),
                service_name: Some(headless.to_string()),
                selector: selector(&self.labels),
                pod_management_policy: Some("OrderedReady".into()),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels.clone()),
                        annotations: Some(BTreeMap::from([(
                            "pgrouter.io/config-checksum".to_string(),
                            sum.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        init_containers: Some(vec![clone]),
                        containers: vec![postgres],
                        security_context: Some(PodSecurityContext {
                            run_as_user: Some(999),
                            run_as_group: Some(999),
                            fs_group: Some(999),
                            run_as_non_root: Some(true),
                            ..PodSecurityContext::default()
                        }),
                        affinity: Some(Affinity {
                            pod_anti_affinity: Some(anti),
                            ..Affinity::default()
                        }),
                        termination_grace_period_seconds: Some(60),
                        volumes: Some(vec![Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config_map.to_string(),
                                default_mode: Some(0o555),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        }]),
                        ..PodSpec::default()
                    }),
                },
                volume_claim_templates: Some(vec![claim]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }
}

/// Variable `var` set to the `postgres` role's password (the
/// `<cluster>-postgres` Secret's `password` key).
pub(super) fn password_env(ctx: &Ctx, var: &str) -> EnvVar {
    EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: password_secret(ctx),
                key: "password".into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// `name=value`.
pub(super) fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// [`Resources`] as a container's requirements.
pub(super) fn resources(r: &Resources) -> ResourceRequirements {
    let q = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        })
    };
    ResourceRequirements {
        requests: q(&r.requests),
        limits: q(&r.limits),
        ..ResourceRequirements::default()
    }
}
