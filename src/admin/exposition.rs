//! The Prometheus / OpenMetrics text exposition of the router's state,
//! encoded by `prometheus-client` from a [`Collector`] that reads
//! [`RouterState`] at scrape time. Metric reference: docs/operations.md
//! "Metrics".

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::{RouteKind, TxnKind};
use crate::state::RouterState;

/// Latency quantiles exposed per route kind.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Reads the router state on each scrape.
struct RouterCollector(Weak<RouterState>);

impl std::fmt::Debug for RouterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterCollector")
    }
}

/// Encodes the current metrics of `state` in the OpenMetrics text format
/// (`# EOF`-terminated; Prometheus scrapes it).
pub fn render(state: &std::sync::Arc<RouterState>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(RouterCollector(std::sync::Arc::downgrade(state))));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

fn counter<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<'a, V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, String)>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in values {
        if labels.is_empty() {
            // `name 1`, not `name{} 1`.
            return ConstGauge::new(v).encode(m);
        }
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for RouterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.0.upgrade() else {
            return Ok(());
        };
        let snap = state.metrics.snapshot();
        let route = |k: RouteKind| vec![("route", k.label().to_string())];
        counter(
            &mut enc,
            "pgrouter_requests",
            "Client requests (a simple Query, or an extended-protocol batch up to Sync) by route kind: router (no shard), fast_path (one shard), scatter_gather (several shards).",
            RouteKind::ALL
                .iter()
                .map(|&k| (route(k), snap.stats.requests[k as usize])),
        )?;
        let mut lat = Vec::new();
        for k in RouteKind::ALL {
            let h = &snap.stats.latency[k as usize];
            for q in QUANTILES {
                let mut l = route(k);
                l.push(("quantile", q.to_string()));
                let us = if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(q)
                };
                lat.push((l, us as f64 / 1e6));
            }
        }
        gauge(
            &mut enc,
            "pgrouter_request_latency_seconds",
            "Request latency quantiles since start by route kind (HdrHistogram, 3 significant digits), from the request's first message to ReadyForQuery.",
            lat,
        )?;
        counter(
            &mut enc,
            "pgrouter_errors",
            "ErrorResponses sent to clients by SQLSTATE class (first two characters).",
            snap.stats
                .errors
                .iter()
                .map(|(c, n)| (vec![("class", String::from_utf8_lossy(c).into_owned())], *n)),
        )?;
        counter(
            &mut enc,
            "pgrouter_transactions",
            "Transaction blocks ended, by kind: single_shard, two_phase, best_effort (commits), rollback.",
            TxnKind::ALL
                .iter()
                .map(|&k| (vec![("kind", k.label().to_string())], snap.txns[k as usize])),
        )?;
        gauge(
            &mut enc,
            "pgrouter_client_connections",
            "Client connections past the StartupMessage (authenticating or in a session).",
            [(Vec::new(), state.client_connections() as i64)],
        )?;
        gauge(
            &mut enc,
            "pgrouter_in_doubt_transactions",
            "Prepared distributed transactions left unresolved by the last 2PC recovery pass.",
            [(Vec::new(), snap.in_doubt as i64)],
        )?;
        let routing = state.routing();
        gauge(
            &mut enc,
            "pgrouter_catalog_version",
            "Catalog snapshots installed since start (1 = the initial load).",
            [(Vec::new(), routing.version as i64)],
        )?;
        gauge(
            &mut enc,
            "pgrouter_catalog_generation",
            "Active key-range generation of each keyspace.",
            routing
                .catalog
                .keyspaces
                .values()
                .map(|k| (vec![("keyspace", k.name.clone())], k.generation)),
        )?;
        let pools = state.pool_stats();
        let shard = |s: &str| vec![("shard", s.to_string())];
        gauge(
            &mut enc,
            "pgrouter_pool_size",
            "Most backend connections to the shard (all session workers).",
            pools.iter().map(|p| (shard(&p.shard), p.size as i64)),
        )?;
        gauge(
            &mut enc,
            "pgrouter_pool_in_use",
            "Backend connections to the shard held by clients.",
            pools.iter().map(|p| (shard(&p.shard), p.in_use as i64)),
        )?;
        gauge(
            &mut enc,
            "pgrouter_pool_idle",
            "Open idle backend connections to the shard.",
            pools.iter().map(|p| (shard(&p.shard), p.idle as i64)),
        )?;
        gauge(
            &mut enc,
            "pgrouter_pool_waiting",
            "Clients waiting for a backend connection to the shard.",
            pools.iter().map(|p| (shard(&p.shard), p.waiting as i64)),
        )?;
        counter(
            &mut enc,
            "pgrouter_pool_connections_opened",
            "Backend connections opened to the shard (attempts).",
            pools.iter().map(|p| (shard(&p.shard), p.opened)),
        )?;
        let jobs = state.splits.jobs();
        let job = |j: &crate::state::splits::SplitJobRow| {
            vec![
                ("job", j.id.to_string()),
                ("keyspace", j.keyspace.clone()),
                ("source", j.source.clone()),
                ("target", j.target.clone()),
            ]
        };
        gauge(
            &mut enc,
            "pgrouter_split_job_phase",
            "1 for each active split job (read from the catalog about once a second), labelled with its phase.",
            jobs.iter().filter(|j| j.active()).map(|j| {
                let mut l = job(j);
                l.push(("phase", j.phase.clone()));
                (l, 1i64)
            }),
        )?;
        gauge(
            &mut enc,
            "pgrouter_split_rows_copied",
            "Rows the active split job copied in its initial copy (all tables).",
            jobs.iter()
                .filter(|j| j.active())
                .map(|j| (job(j), j.rows_copied)),
        )?;
        gauge(
            &mut enc,
            "pgrouter_split_lag_bytes",
            "Catch-up lag of the active split job, bytes of source WAL not yet applied to the target.",
            jobs.iter()
                .filter(|j| j.active())
                .filter_map(|j| j.lag_bytes.map(|b| (job(j), b))),
        )?;
        {
            let m = enc.encode_descriptor(
                "pgrouter_split_write_block_seconds",
                "Write-block windows of split cutovers as this router saw them: a block installed here until writes to its source were admitted again (routing updated or block lifted).",
                None,
                MetricType::Histogram,
            )?;
            state.splits.windows().encode(m)?;
        }
        gauge(
            &mut enc,
            "pgrouter_shard_up",
            "1 while the shard is reachable, 0 while it is marked down (its queries fail fast; the router reconnects with backoff).",
            state
                .shard_health()
                .into_iter()
                .map(|(s, down)| (shard(&s), i64::from(down.is_none()))),
        )?;
        Ok(())
    }
}
