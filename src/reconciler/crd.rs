//! The custom resources of group `pgrouter.io`, version `v1alpha1`:
//! [`PostgresCluster`] (a sharded cluster: shards, catalog, routers),
//! [`ShardRange`] (a keyspace's key ranges → shards, applied to the
//! catalog) and [`ShardSplitJob`] (one online split, mirrored from the
//! catalog's `split_jobs` row). Rust types are the source of truth: the CRD
//! YAML under `charts/pg-router/crds/` is generated from them
//! (`pg-router operator crds`) and a test fails when it drifts.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every pg-router resource.
pub const GROUP: &str = "pgrouter.io";

/// Compute resources of a container: Kubernetes quantities by resource
/// name (`cpu: "500m"`, `memory: "1Gi"`), as in a Pod spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Requested quantities.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// Limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// A persistent volume per instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size as a Kubernetes quantity, e.g. `10Gi`.
    pub size: String,
    /// StorageClass name; unset = the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            size: "10Gi".into(),
            storage_class: None,
        }
    }
}

/// The shards: N PostgreSQL StatefulSets, `<cluster>-shard-<i>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardsSpec {
    /// Number of shards (registered as `shard0..shard{count-1}`), ≥ 1.
    #[schemars(range(min = 1, max = 1024))]
    pub count: u32,
    /// PostgreSQL instances per shard (1 = no standby), ≥ 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: u32,
    /// PostgreSQL image (15 or later), e.g. `postgres:15`.
    #[serde(default = "default_pg_image")]
    pub image: String,
    /// Volume of each instance.
    #[serde(default)]
    pub storage: Storage,
    /// Container resources of each instance.
    #[serde(default)]
    pub resources: Resources,
    /// Extra `postgresql.conf` settings. `wal_level`,
    /// `max_prepared_transactions`, `max_replication_slots` and
    /// `max_wal_senders` are set by the reconciler (online resharding and
    /// two-phase commit need them) and may not be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// The catalog database (one PostgreSQL instance, `<cluster>-catalog`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogSpec {
    /// Its volume.
    #[serde(default)]
    pub storage: Storage,
    /// Its container resources.
    #[serde(default)]
    pub resources: Resources,
}

/// The routers: a Deployment scaled by a HorizontalPodAutoscaler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// pg-router image.
    #[serde(default = "default_router_image")]
    pub image: String,
    /// Fewest router pods (HPA `minReplicas`), ≥ 1.
    #[serde(default = "two")]
    #[schemars(range(min = 1))]
    pub min_replicas: u32,
    /// Most router pods (HPA `maxReplicas`), ≥ `minReplicas`.
    #[serde(default = "ten")]
    #[schemars(range(min = 1))]
    pub max_replicas: u32,
    /// Target average CPU utilization, percent of the CPU request.
    #[serde(default = "seventy")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: u32,
    /// Optional second HPA metric: target average client connections per
    /// pod (Pods metric `pgrouter_client_connections`, served through
    /// prometheus-adapter from `/metrics`; see `docs/kubernetes.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_connections_per_pod: Option<u32>,
    /// Container resources (set a CPU request: the HPA scales on it).
    #[serde(default)]
    pub resources: Resources,
    /// Extra `router.toml` text appended after the generated sections
    /// (limits, pools, logging; see `router-config/router.toml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Secret holding the users file (`users.txt` key, SCRAM verifiers from
    /// `pg-router secret`); unset = the Secret `<cluster>-users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_secret: Option<String>,
    /// Seconds the router drains client sessions after SIGTERM
    /// (`drain_timeout`); the pod's grace period is longer.
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_timeout_seconds: u32,
    /// Also create a prometheus-operator ServiceMonitor for `/metrics`.
    #[serde(default)]
    pub service_monitor: bool,
}

/// TLS Secrets (type `kubernetes.io/tls`) by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Certificate the routers present to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_secret: Option<String>,
    /// Certificate of the shards and the catalog (`ssl = on`); its `ca.crt`
    /// is what the routers verify them with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_secret: Option<String>,
}

/// A sharded PostgreSQL cluster behind pg-router.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgrouter.io",
    version = "v1alpha1",
    kind = "PostgresCluster",
    plural = "postgresclusters",
    shortname = "pgc",
    namespaced,
    status = "PostgresClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Shards","type":"integer","jsonPath":".spec.shards.count"}"#,
    printcolumn = r#"{"name":"Routers","type":"integer","jsonPath":".status.routerReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterSpec {
    /// The shards.
    pub shards: ShardsSpec,
    /// The catalog database.
    #[serde(default)]
    pub catalog: CatalogSpec,
    /// The routers.
    pub router: RouterSpec,
    /// TLS Secrets; unset = plaintext inside the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// One condition, as Kubernetes' `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: String,
    /// The object's `metadata.generation` this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Readiness of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Catalog name (`shard0`, ...).
    pub name: String,
    /// Ready instances (StatefulSet `readyReplicas`).
    pub ready_replicas: u32,
    /// All its instances are ready.
    pub ready: bool,
}

/// Observed state of a [`PostgresCluster`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// `Pending`, `Provisioning`, `Ready` or `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Per shard.
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
    /// The catalog's keyspace generations, by keyspace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub catalog_generations: BTreeMap<String, i64>,
    /// Ready router pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_replicas: Option<u32>,
}

/// One key range `[start, end)` of keyspace ids and its shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RangeAssignment {
    /// First keyspace id, `0x` hex (16 digits at most).
    #[schemars(pattern(r"^0x[0-9a-fA-F]{1,16}$"))]
    pub start: String,
    /// End (exclusive), `0x` hex; unset = the end of the id space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^0x[0-9a-fA-F]{1,16}$"))]
    pub end: Option<String>,
    /// Shard name (`shard0`, ...).
    pub shard: String,
}

/// A keyspace's key ranges → shards, applied to the catalog.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgrouter.io",
    version = "v1alpha1",
    kind = "ShardRange",
    plural = "shardranges",
    namespaced,
    status = "ShardRangeStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Keyspace","type":"string","jsonPath":".spec.keyspace"}"#,
    printcolumn = r#"{"name":"Generation","type":"integer","jsonPath":".status.catalogGeneration"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ShardRangeSpec {
    /// The PostgresCluster whose catalog this is.
    pub cluster: String,
    /// Keyspace name.
    pub keyspace: String,
    /// Vindex: `hash_murmur3`, `hash_crc32`, `hash_fnv1a`, `range`,
    /// `consistent_hash` (`docs/vindexes.md`).
    #[serde(default = "default_vindex")]
    pub vindex: String,
    /// The ranges, covering the id space without gaps or overlaps.
    pub ranges: Vec<RangeAssignment>,
}

/// Observed state of a [`ShardRange`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardRangeStatus {
    /// The keyspace's catalog generation after the last apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_generation: Option<i64>,
    /// `metadata.generation` last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Applied`: True (reason `Written` or `InSync`) once the catalog has
    /// the layout; False with reason `Refused` (a populated range would be
    /// reassigned without a split job: never applied), `Busy` (a split job
    /// of the keyspace is active), `Superseded` (a split job changed the
    /// ranges after this spec was applied: not re-applied until the spec
    /// changes), `CatalogError`, `InvalidSpec` or `Waiting` (no cluster or
    /// password yet), and the message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// When the cutover (step 5) happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CutoverMode {
    /// As soon as the catch-up lag is below the threshold.
    #[default]
    Automatic,
    /// Once `spec.cutover.approved` is set to true.
    Manual,
}

/// Cutover settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CutoverSpec {
    /// Automatic or Manual.
    #[serde(default)]
    pub mode: CutoverMode,
    /// Manual mode: set to true to let the cutover start.
    #[serde(default)]
    pub approved: bool,
    /// Longest write block, ms, before an attempt is abandoned and retried.
    #[serde(default = "thousand")]
    #[schemars(range(min = 1))]
    pub max_window_ms: u64,
    /// Catch-up lag, bytes, below which a cutover is attempted.
    #[serde(default = "lag_threshold")]
    pub lag_threshold_bytes: u64,
}

impl Default for CutoverSpec {
    fn default() -> Self {
        CutoverSpec {
            mode: CutoverMode::Automatic,
            approved: false,
            max_window_ms: thousand(),
            lag_threshold_bytes: lag_threshold(),
        }
    }
}

/// One online split (or move) of a key range to another shard.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgrouter.io",
    version = "v1alpha1",
    kind = "ShardSplitJob",
    plural = "shardsplitjobs",
    shortname = "ssj",
    namespaced,
    status = "ShardSplitJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.lagBytes"}"#,
    printcolumn = r#"{"name":"Window ms","type":"integer","jsonPath":".status.cutoverWindowMs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ShardSplitJobSpec {
    /// The PostgresCluster.
    pub cluster: String,
    /// Keyspace whose range moves.
    pub keyspace: String,
    /// Shard owning the range now.
    pub source: String,
    /// Shard receiving it: an existing shard, or the next one
    /// (`shard{count}`), which the reconciler bootstraps first.
    pub target: String,
    /// Move `[splitPoint, end of its range)` (keyspace id, `0x` hex);
    /// unset (and no `range`) = the upper half of the source's largest
    /// range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_point: Option<String>,
    /// Move exactly this range (its `shard` is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeAssignment>,
    /// Cutover settings.
    #[serde(default)]
    pub cutover: CutoverSpec,
    /// Allow deleting the job after the point of no return to leave it
    /// running to completion instead of waiting (never rolls back after
    /// the routing update either way).
    #[serde(default)]
    pub allow_forward_only: bool,
}

/// Observed state of a [`ShardSplitJob`], mirrored from the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardSplitJobStatus {
    /// `Pending`, `Capture`, `Bootstrap`, `Copy`, `CatchUp`, `Cutover`,
    /// `Routed`, `Cleanup`, `Completed`, `Failed`, `RolledBack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The catalog's `split_jobs.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// LSN of the exported snapshot (step 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_lsn: Option<String>,
    /// Catch-up lag, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Rows copied in step 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_copied: Option<u64>,
    /// Verification result before the cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    /// RFC 3339 start of the last cutover attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_started_at: Option<String>,
    /// Write-block window of the cutover that committed, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_window_ms: Option<u64>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Progressing`, `Ready` (completed), `Degraded` (failed).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn ten() -> u32 {
    10
}
fn thirty() -> u32 {
    30
}
fn seventy() -> u32 {
    70
}
fn thousand() -> u64 {
    1000
}
fn lag_threshold() -> u64 {
    64 << 10
}
fn default_pg_image() -> String {
    "postgres:15".into()
}
fn default_router_image() -> String {
    "ghcr.io/pg-router/pg-router:0.1.0".into()
}
fn default_vindex() -> String {
    "hash_murmur3".into()
}
