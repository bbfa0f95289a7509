//! Seeded differential test of multi-shard SELECT merging (scatter-gather).
//!
//! The same data set is loaded twice: through the router into a sharded
//! cluster (3 shards, `items` sharded on `id`, `events` on `k`, `logs` on a
//! generated key `id`) and directly
//! into a plain, unsharded PostgreSQL database (`reference`, created on the
//! catalog instance). A seeded generator then produces SELECTs of many shapes
//! — filters, ORDER BY mixes with LIMIT/OFFSET, aggregates with and without
//! GROUP BY/HAVING, DISTINCT, DISTINCT ON, key lookups — over both the simple
//! and the extended protocol, interleaved with writes applied to both sides
//! (multi-row INSERTs with literals and with parameters, INSERTs without a
//! column list, INSERTs whose generated key the router draws, INSERT ...
//! SELECT co-located and through the router). Co-located joins
//! (items.id = events.k = logs.id, outer, three tables, with the reference
//! table `kinds`) are merged like single-table SELECTs; subqueries
//! correlated on the key are pushed down, uncorrelated ones run first
//! (both protocols); `COPY (query) TO STDOUT` forms (text, CSV with
//! options, a subquery inside) compare their output lines.
//! Every query runs on the reference first, then through the router, and the
//! results are compared:
//!
//! * ORDER BY total (it ends in a unique key): rows compared in order;
//! * ORDER BY not total: the sequence of sort-key values must be identical
//!   and the rows equal as a multiset (PostgreSQL orders ties arbitrarily);
//! * no ORDER BY: rows compared as a multiset.
//!
//! Float aggregates (sum/avg over float8) are compared with a relative
//! tolerance of 1e-9, as summation order differs across shards; every other
//! cell is compared exactly as text (column names, and types in the extended
//! protocol, too).
//!
//! Outcomes per query: `ok`; `refused` (the router answered SQLSTATE 0A000);
//! `mismatch` (any other router error, a timeout or a different result);
//! `skipped` (the reference itself failed: a generator bug, listed).
//!
//! Knobs (environment):
//! * `PGR_DIFF_SEED` (default [`DEFAULT_SEED`]) — generator seed, printed in
//!   the summary so a failure can be replayed;
//! * `PGR_DIFF_QUERIES` (default 2000) — number of SELECTs;
//! * `PGR_DIFF_ALLOW_REFUSED=1` — do not fail on refusals (only on
//!   mismatches), useful while merges are being implemented;
//! * `PGR_DIFF_SHOW` (default 30) — how many mismatches are printed;
//! * `PGR_DIFF_SELF_CHECK=1` — checks the test rather than the router: the
//!   statements go to a second plain database loaded in reverse row order;
//!   everything must come out `ok` (validates the ORDER BY totality and
//!   tolerance assumptions on every form, including those the router still
//!   refuses).
//!
//! Run: `cargo test --profile ci --test it scatter_diff -- --nocapture`

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use fastrand::Rng;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

const DEFAULT_SEED: u64 = 0x5eed_d1ff;
const DEFAULT_QUERIES: usize = 3_000;
const SHARDS: usize = 3;
const POOL_SIZE: usize = 2;
/// Rows initially loaded into `items`.
const ITEM_ROWS: i64 = 3000;
/// A batch of writes runs after every this many SELECTs.
const WRITE_EVERY: usize = 50;
/// A router answer slower than this counts as a mismatch (and the
/// connection is replaced).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many mismatches are printed in full (`PGR_DIFF_SHOW` overrides).
const SHOW_MISMATCHES: usize = 30;
/// How many skipped statements are printed.
const SHOW_SKIPPED: usize = 10;

/// Applied to the router session and to the reference session alike, so
/// timestamptz rendering and `date_trunc` over timestamptz agree (and cross
/// daylight-saving transitions).
const SESSION_SETTINGS: &str = "SET TimeZone = 'Europe/Berlin'";

const ITEMS_DDL: &str =
    "CREATE TABLE items (id bigint PRIMARY KEY, g int, h text, n numeric(12,2), \
     f float8, b bool, d date, ts timestamp, tz timestamptz, u uuid, s smallint)";
const EVENTS_DDL: &str = "CREATE TABLE events (k bigint, id bigint, v int, PRIMARY KEY (k, id))";
/// Sharded by a generated key: rows are inserted without `id`, the router
/// draws it from its distributed sequence, the reference from the serial's
/// own sequence; both hand out 1, 2, 3, ... to one session.
const LOGS_DDL: &str = "CREATE TABLE logs (id bigserial PRIMARY KEY, item bigint, v int)";
/// Rows initially loaded into `logs` (in batches, half of them with
/// parameters).
const LOG_ROWS: usize = 600;
/// A reference table (a copy on every shard) joined with the sharded ones.
const KINDS_DDL: &str = "CREATE TABLE kinds (g int PRIMARY KEY, name text)";
const KINDS_ROWS: &str = "INSERT INTO kinds SELECT g, CASE WHEN g % 3 = 0 THEN 'fizz' ELSE 'k' || g END FROM generate_series(-5, 12) g";
const ITEM_COLS: &[&str] = &["id", "g", "h", "n", "f", "b", "d", "ts", "tz", "u", "s"];
const ITEMS_INSERT: &str = "INSERT INTO items (id, g, h, n, f, b, d, ts, tz, u, s) VALUES ";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// Data generation (SQL literals; the same text goes to both databases)
// ---------------------------------------------------------------------------

/// Text values: many duplicates, mixed case, empty, quotes, LIKE
/// metacharacters, non-ASCII (the cluster uses the C collation).
const WORDS: &[&str] = &[
    "alpha",
    "Alpha",
    "ALPHA",
    "beta",
    "Beta",
    "gamma",
    "Gamma ray",
    "delta",
    "epsilon",
    "x",
    "X",
    "",
    "a b c",
    "it's",
    "under_score",
    "per%cent",
    "ümlaut",
    "Ärger",
    "naïve",
    "zeta",
    "Zeta",
    "omega",
    "Omega",
    "mu",
    "nu",
];
/// A few uuids that repeat (the rest are random).
const UUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "11111111-2222-3333-4444-555555555555",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "7d444840-9dc0-11d1-b245-5ffdce74fad2",
];

fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.f64() < p
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.usize(..xs.len())]
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `NULL` with probability 10 %, otherwise `f(rng)`.
fn nullable(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> String) -> String {
    if chance(rng, 0.1) {
        "NULL".into()
    } else {
        f(rng)
    }
}

/// Skewed groups: half the rows in group 3, a few in -1, the rest in 0..10.
fn gen_g(rng: &mut Rng) -> i32 {
    let r = rng.f64();
    if r < 0.5 {
        3
    } else if r < 0.53 {
        -1
    } else {
        rng.i32(0..10)
    }
}

fn gen_text(rng: &mut Rng) -> String {
    let r = rng.f64();
    if r < 0.65 {
        pick(rng, WORDS).to_string()
    } else if r < 0.7 {
        "z".repeat(rng.usize(30..90))
    } else {
        const CH: &[char] = &[
            'a', 'b', 'e', 'l', 'p', 'A', 'B', 'Z', ' ', '_', 'x', 'y', 'ö',
        ];
        (0..rng.usize(1..12)).map(|_| pick(rng, CH)).collect()
    }
}

/// numeric(12,2) literals with 0, 1 or 2 decimals (stored at scale 2).
fn gen_numeric(rng: &mut Rng) -> String {
    let int = if chance(rng, 0.03) {
        rng.i64(0..10_000_000_000)
    } else if chance(rng, 0.6) {
        rng.i64(0..1000)
    } else {
        rng.i64(0..100_000)
    };
    let sign = if chance(rng, 0.3) { "-" } else { "" };
    match rng.u32(0..3) {
        0 => format!("{sign}{int}"),
        1 => format!("{sign}{int}.{}", rng.u32(0..10)),
        _ => format!("{sign}{int}.{:02}", rng.u32(0..100)),
    }
}

/// float8 literals: duplicates, full-precision randoms, and a few
/// NaN/Infinity/-0 (queries that sum/avg `f` filter those out).
fn gen_float(rng: &mut Rng) -> String {
    let r = rng.f64();
    let v = if r < 0.005 {
        pick(rng, &["NaN", "Infinity", "-Infinity", "-0", "0"]).to_string()
    } else if r < 0.25 {
        pick(rng, &["1.5", "-2.25", "0.1", "1e-05", "3.14159", "100"]).to_string()
    } else {
        format!("{}", rng.f64() * 2000.0 - 1000.0)
    };
    sql_str(&v)
}

/// Dates 1900..2100, ~2 % BC.
fn gen_date(rng: &mut Rng) -> String {
    let (m, d) = (rng.u32(1..13), rng.u32(1..29));
    if chance(rng, 0.02) {
        format!("'{:04}-{m:02}-{d:02} BC'", rng.u32(1..800))
    } else {
        format!("'{:04}-{m:02}-{d:02}'", rng.u32(1900..2100))
    }
}

fn gen_ts(rng: &mut Rng) -> String {
    let frac = if chance(rng, 0.3) {
        format!(".{:06}", rng.u32(0..1_000_000))
    } else {
        String::new()
    };
    format!(
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}{frac}'",
        rng.u32(2015..2026),
        rng.u32(1..13),
        rng.u32(1..29),
        rng.u32(0..24),
        rng.u32(0..60),
        rng.u32(0..60)
    )
}

/// timestamptz: 40 % within hours of a Europe/Berlin DST switch.
fn gen_tz(rng: &mut Rng) -> String {
    if chance(rng, 0.4) {
        let day = pick(
            rng,
            &["2021-03-28", "2021-10-31", "2022-03-27", "2022-10-30"],
        );
        format!("'{day} {:02}:{:02}:00+00'", rng.u32(0..4), rng.u32(0..60))
    } else {
        let off = pick(rng, &["+00", "+02", "-05", "+05:30"]);
        format!(
            "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}{off}'",
            rng.u32(2019..2024),
            rng.u32(1..13),
            rng.u32(1..29),
            rng.u32(0..24),
            rng.u32(0..60),
            rng.u32(0..60)
        )
    }
}

fn gen_uuid(rng: &mut Rng) -> String {
    if chance(rng, 0.3) {
        return sql_str(pick(rng, UUIDS));
    }
    let h = format!("{:032x}", rng.u128(..));
    format!(
        "'{}-{}-{}-{}-{}'",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One `items` row as a VALUES tuple; every non-key column is NULL ~10 %.
/// `infinity_date` gives the row `d = 'infinity'` (used once).
fn item_row(rng: &mut Rng, id: i64, infinity_date: bool) -> String {
    let g = nullable(rng, |r| gen_g(r).to_string());
    let h = nullable(rng, |r| sql_str(&gen_text(r)));
    let n = nullable(rng, gen_numeric);
    let f = nullable(rng, gen_float);
    let b = nullable(rng, |r| r.bool().to_string());
    let d = if infinity_date {
        "'infinity'".into()
    } else {
        nullable(rng, gen_date)
    };
    let ts = nullable(rng, gen_ts);
    let tz = nullable(rng, gen_tz);
    let u = nullable(rng, gen_uuid);
    let s = nullable(rng, |r| r.i16(-300..=300).to_string());
    format!("({id}, {g}, {h}, {n}, {f}, {b}, {d}, {ts}, {tz}, {u}, {s})")
}

/// A `logs` row without its key: `(item, v)`.
fn log_row(rng: &mut Rng) -> String {
    format!(
        "({}, {})",
        rng.i64(1..20_000),
        nullable(rng, |r| r.i32(-50..500).to_string())
    )
}

fn event_rows(rng: &mut Rng, k: i64) -> Vec<String> {
    (1..=rng.i64(1..6))
        .map(|id| {
            format!(
                "({k}, {id}, {})",
                nullable(rng, |r| r.i32(-50..500).to_string())
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// A bind parameter of an extended-protocol query.
#[derive(Debug, Clone)]
enum Param {
    I16(i16),
    I32(i32),
    I64(i64),
    F64(f64),
    Text(String),
    Bool(bool),
    I64s(Vec<i64>),
}

impl Param {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::I16(v) => v,
            Param::I32(v) => v,
            Param::I64(v) => v,
            Param::F64(v) => v,
            Param::Text(v) => v,
            Param::Bool(v) => v,
            Param::I64s(v) => v,
        }
    }
}

/// How result rows are compared.
#[derive(Debug, Clone)]
enum Order {
    /// No ORDER BY: multiset comparison.
    None,
    /// ORDER BY is total (ends in a unique key): exact sequence.
    Total,
    /// ORDER BY not total; these output columns hold the sort keys: their
    /// sequence must match, the rows must match as a multiset.
    Keys(Vec<usize>),
}

/// How a cell is compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Exact,
    /// A float aggregate (sum/avg over float8): relative tolerance 1e-9.
    Float,
}

/// A generated statement.
#[derive(Debug, Clone)]
struct Q {
    /// The generator form, for the per-form summary.
    form: &'static str,
    sql: String,
    params: Vec<Param>,
    extended: bool,
    order: Order,
    /// Per output column (missing = exact).
    kinds: Vec<Kind>,
}

impl Q {
    fn kind(&self, col: usize) -> Kind {
        self.kinds.get(col).copied().unwrap_or(Kind::Exact)
    }
    fn describe(&self) -> String {
        let proto = if self.extended { "extended" } else { "simple" };
        if self.params.is_empty() {
            format!("[{proto}] {}", self.sql)
        } else {
            format!("[{proto}] {}  -- params {:?}", self.sql, self.params)
        }
    }
}

/// Projection expressions over `items` (also used as sort keys).
const PROJ: &[&str] = &[
    "id",
    "g",
    "h",
    "n",
    "f",
    "b",
    "d",
    "ts",
    "tz",
    "u",
    "s",
    "g % 3",
    "lower(h)",
    "n * 2",
    "coalesce(h, '~')",
    "length(h)",
    "s + g",
    "date_trunc('month', ts)",
    "upper(h)",
    "abs(f)",
];
/// GROUP BY keys (no float keys: -0 and 0 would group together and the
/// group's representative text would depend on scan order).
const GKEYS: &[&str] = &[
    "g",
    "b",
    "g % 3",
    "lower(h)",
    "h",
    "date_trunc('month', ts)",
    "s % 10",
    "extract(year from d)",
    "(n > 0)",
    "date_trunc('day', tz)",
    "length(h)",
];
/// DISTINCT select lists.
const DPOOL: &[&str] = &[
    "g",
    "b",
    "g % 3",
    "lower(h)",
    "h",
    "s % 5",
    "date_trunc('year', ts)",
    "d",
    "f",
    "u",
    "n",
];
/// DISTINCT ON expressions.
const DON: &[&str] = &[
    "g",
    "g % 3",
    "lower(h)",
    "b",
    "s % 4",
    "date_trunc('year', d)",
];
/// Excludes NaN/±Infinity from float sums and averages.
const FINITE_F: &str = "f BETWEEN -1e300 AND 1e300";

/// An aggregate select item.
struct Agg {
    sql: String,
    kind: Kind,
    /// sum/avg over `f`: the query must exclude non-finite values.
    uses_f: bool,
    /// An expression over aggregates or an aggregate the router does not
    /// merge itself (`string_agg`, ...): finished by PostgreSQL.
    fin: bool,
}

/// Expressions over aggregates and aggregates the router does not merge
/// itself: the query's final step runs in PostgreSQL over the shards'
/// partial aggregates or raw rows.
const FINAL_AGGS: &[&str] = &[
    "count(*)::int",
    "sum(g) / nullif(count(*), 0)",
    "coalesce(sum(g), 0)",
    "sum(s) + 1",
    "round(avg(n), 2)",
    "max(id) - min(id)",
    "count(DISTINCT g) * 2",
    "avg(g)::numeric(12,3)",
    "sum(n) / nullif(count(n), 0)",
    "max(h) || '!'",
    "CASE WHEN count(*) > 10 THEN 'many' ELSE 'few' END",
    "string_agg(h, ',' ORDER BY id)",
    "array_agg(g ORDER BY id DESC)",
    "string_agg(DISTINCT lower(h), '|' ORDER BY lower(h))",
    "percentile_disc(0.5) WITHIN GROUP (ORDER BY g)",
    "stddev_samp(s)",
    "bit_or(s)",
    "count(*) FILTER (WHERE b) + count(g)",
];

/// A select item of a generated query.
struct Item {
    expr: String,
    alias: Option<String>,
    kind: Kind,
    /// Index of the GROUP BY key this item is.
    key: Option<usize>,
}

impl Item {
    fn sql(&self) -> String {
        match &self.alias {
            Some(a) => format!("{} AS {a}", self.expr),
            None => self.expr.clone(),
        }
    }
}

/// The query generator for one statement: literals become `$n` parameters
/// in extended-protocol statements.
struct Gen<'a> {
    rng: &'a mut Rng,
    extended: bool,
    params: Vec<Param>,
    /// Live `items` ids (for key lookups).
    ids: &'a [i64],
}

impl Gen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        chance(self.rng, p)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        pick(self.rng, xs)
    }
    fn pick_distinct<T: Copy>(&mut self, xs: &[T], n: usize) -> Vec<T> {
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        self.rng.shuffle(&mut idx);
        idx.into_iter().take(n).map(|i| xs[i]).collect()
    }

    fn param(&mut self, p: Param, literal: String) -> String {
        if self.extended {
            self.params.push(p);
            format!("${}", self.params.len())
        } else {
            literal
        }
    }
    fn int(&mut self, v: i32) -> String {
        self.param(Param::I32(v), v.to_string())
    }
    fn small(&mut self, v: i16) -> String {
        self.param(Param::I16(v), v.to_string())
    }
    fn big(&mut self, v: i64) -> String {
        self.param(Param::I64(v), v.to_string())
    }
    fn float(&mut self, v: f64) -> String {
        self.param(Param::F64(v), format!("{v}"))
    }
    fn text(&mut self, v: &str) -> String {
        self.param(Param::Text(v.to_string()), sql_str(v))
    }
    fn boolean(&mut self, v: bool) -> String {
        self.param(Param::Bool(v), v.to_string())
    }

    /// An id of a live row (or, 20 %, one that does not exist).
    fn some_id(&mut self) -> i64 {
        if self.ids.is_empty() || self.chance(0.2) {
            self.rng.i64(1..20_000)
        } else {
            self.pick(self.ids)
        }
    }

    /// One filter over `items`.
    fn pred(&mut self) -> String {
        let cmp = ["=", "<>", "<", ">", "<=", ">="];
        match self.rng.u32(0..15) {
            0 => {
                let (op, v) = (self.pick(&cmp), self.rng.i32(-1..10));
                format!("g {op} {}", self.int(v))
            }
            1 => {
                let c = self.pick(&ITEM_COLS[1..]);
                format!("{c} IS {}NULL", if self.rng.bool() { "NOT " } else { "" })
            }
            2 => {
                let a = self.rng.i16(-300..200);
                let b = a + self.rng.i16(0..300);
                format!("s BETWEEN {} AND {}", self.small(a), self.small(b))
            }
            3 => format!("n {} {}", self.pick(&cmp[2..]), self.rng.i32(-500..500)),
            4 => {
                let (op, v) = (
                    self.pick(&cmp[2..]),
                    (self.rng.f64() * 2000.0 - 1000.0).round() / 4.0,
                );
                format!("f {op} {}", self.float(v))
            }
            5 => {
                if self.rng.bool() {
                    self.pick(&["b", "NOT b", "b IS TRUE", "b IS NOT FALSE"])
                        .to_string()
                } else {
                    let v = self.rng.bool();
                    format!("b = {}", self.boolean(v))
                }
            }
            6 => format!(
                "d {} '{:04}-06-01'",
                self.pick(&cmp[2..]),
                self.rng.u32(1900..2100)
            ),
            7 => {
                let y = self.rng.u32(2015..2025);
                format!(
                    "ts BETWEEN '{y}-01-01' AND '{}-06-30 12:00'",
                    y + self.rng.u32(0..3)
                )
            }
            8 => format!("tz > '2021-{:02}-15 00:00:00+00'", self.rng.u32(1..13)),
            9 => {
                let (col, op) = (
                    self.pick(&["h", "lower(h)"]),
                    self.pick(&["LIKE", "LIKE", "NOT LIKE", "ILIKE"]),
                );
                let pat =
                    self.pick(&["a%", "%e%", "_", "%a", "Al%", "ALPHA", "%\\_%", "z%", "%ö%"]);
                format!("{col} {op} {}", self.text(pat))
            }
            10 => {
                let n = self.rng.usize(1..5);
                let vs: Vec<String> = (0..n)
                    .map(|_| {
                        let v = self.rng.i32(-1..10);
                        self.int(v)
                    })
                    .collect();
                format!(
                    "g {}IN ({})",
                    if self.chance(0.2) { "NOT " } else { "" },
                    vs.join(", ")
                )
            }
            11 => {
                let n = self.rng.usize(1..4);
                let ws = self.pick_distinct(WORDS, n);
                let vs: Vec<String> = ws.iter().map(|w| self.text(w)).collect();
                format!("h IN ({})", vs.join(", "))
            }
            12 => {
                if self.rng.bool() {
                    let v = self.rng.i64(0..10_000);
                    format!("id {} {}", self.pick(&cmp[2..]), self.big(v))
                } else {
                    let v = self.rng.i64(0..7);
                    format!("id % 7 = {}", self.big(v))
                }
            }
            13 => format!(
                "u {} {}",
                self.pick(&["=", "<>"]),
                sql_str(self.pick(UUIDS))
            ),
            _ => {
                let v = self.rng.i32(-50..300);
                format!("coalesce(g, 0) + s > {}", self.int(v))
            }
        }
    }

    /// A condition on the sharding key: an IN list, `= ANY(array)` or a
    /// single equality.
    fn key_lookup(&mut self) -> String {
        let ids: Vec<i64> = (0..self.rng.usize(1..9)).map(|_| self.some_id()).collect();
        match self.rng.u32(0..4) {
            0 | 1 => {
                let vs: Vec<String> = ids.iter().map(|v| self.big(*v)).collect();
                format!("id IN ({})", vs.join(", "))
            }
            2 => {
                let list: Vec<String> = ids.iter().map(|v| v.to_string()).collect();
                let lit = format!("ARRAY[{}]::bigint[]", list.join(", "));
                format!("id = ANY({})", self.param(Param::I64s(ids), lit))
            }
            _ => format!("id = {}", self.big(ids[0])),
        }
    }

    /// ` WHERE ...` (or nothing): 0–2 filters, sometimes an OR, sometimes a
    /// key lookup; `finite_f` adds [`FINITE_F`].
    fn where_clause(&mut self, finite_f: bool) -> String {
        let mut conj: Vec<String> = Vec::new();
        for _ in 0..self.pick(&[0, 0, 1, 1, 1, 2]) {
            conj.push(self.pred());
        }
        if self.chance(0.12) {
            let (a, b) = (self.pred(), self.pred());
            conj.push(format!("({a} OR {b})"));
        }
        if self.chance(0.12) {
            conj.push(self.key_lookup());
        }
        if finite_f {
            conj.push(FINITE_F.into());
        }
        if conj.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conj.join(" AND "))
        }
    }

    /// `expr` with a random direction and NULLS placement.
    fn order_key(&mut self, expr: &str) -> String {
        let dir = self.pick(&["", " ASC", " DESC", " DESC"]);
        let nulls = self.pick(&["", "", " NULLS FIRST", " NULLS LAST"]);
        format!("{expr}{dir}{nulls}")
    }

    /// How ORDER BY / GROUP BY refers to select item `pos`: by position, by
    /// alias, or by repeating the expression.
    fn item_ref(&mut self, items: &[Item], pos: usize) -> String {
        match (self.rng.u32(0..3), &items[pos].alias) {
            (0, _) => (pos + 1).to_string(),
            (1, Some(a)) => a.clone(),
            _ => items[pos].expr.clone(),
        }
    }

    /// ` LIMIT`/`OFFSET`/`FETCH FIRST` (only used with a total ORDER BY).
    fn limit(&mut self) -> String {
        let l = self.rng.i64(0..40);
        match self.rng.u32(0..6) {
            0 | 1 => format!(" LIMIT {}", self.big(l)),
            2 | 3 => {
                let o = self.rng.i64(0..60);
                format!(" LIMIT {} OFFSET {}", self.big(l), self.big(o))
            }
            4 => {
                let o = self.pick(&[0, 7, 2950, 5000]);
                format!(" OFFSET {}", self.big(o))
            }
            _ if !self.extended => format!(" FETCH FIRST {} ROWS ONLY", l.max(1)),
            _ => format!(" LIMIT {}", self.big(l)),
        }
    }

    fn agg(&mut self) -> Agg {
        if self.chance(0.2) {
            let sql = self.pick(FINAL_AGGS).to_string();
            return Agg {
                sql,
                kind: Kind::Exact,
                uses_f: false,
                fin: true,
            };
        }
        let (sql, kind, uses_f) = match self.rng.u32(0..100) {
            0..=11 => ("count(*)".to_string(), Kind::Exact, false),
            12..=19 => (
                format!("count({})", self.pick(&ITEM_COLS[1..])),
                Kind::Exact,
                false,
            ),
            20..=25 => {
                let c = self.pick(&["g", "h", "b", "s", "d", "u", "f", "lower(h)"]);
                (format!("count(DISTINCT {c})"), Kind::Exact, false)
            }
            26..=37 => (
                format!(
                    "sum({})",
                    self.pick(&["g", "s", "id", "n", "g * 2", "n * s"])
                ),
                Kind::Exact,
                false,
            ),
            38..=41 => ("sum(f)".to_string(), Kind::Float, true),
            42..=45 => (
                format!("sum(DISTINCT {})", self.pick(&["g", "s", "n"])),
                Kind::Exact,
                false,
            ),
            46 => ("sum(DISTINCT f)".to_string(), Kind::Float, true),
            47..=54 => (
                format!("avg({})", self.pick(&["g", "s", "id", "n"])),
                Kind::Exact,
                false,
            ),
            55..=57 => ("avg(f)".to_string(), Kind::Float, true),
            58..=61 => (
                format!("avg(DISTINCT {})", self.pick(&["g", "s", "n"])),
                Kind::Exact,
                false,
            ),
            62..=91 => {
                let f = self.pick(&["min", "max"]);
                let c = self.pick(&[
                    "id",
                    "g",
                    "h",
                    "n",
                    "f",
                    "d",
                    "ts",
                    "tz",
                    "s",
                    "lower(h)",
                    "length(h)",
                ]);
                (format!("{f}({c})"), Kind::Exact, false)
            }
            _ => (
                self.pick(&["bool_and(b)", "bool_or(b)"]).to_string(),
                Kind::Exact,
                false,
            ),
        };
        Agg {
            sql,
            kind,
            uses_f,
            fin: false,
        }
    }

    fn having(&mut self) -> String {
        match self.rng.u32(0..13) {
            9 => "sum(g) % 2 = 0".into(),
            10 => {
                let v = self.rng.i64(0..30);
                format!("count(*) * 2 > {}", self.big(v))
            }
            11 => "max(s) - min(s) > 50".into(),
            12 => "coalesce(sum(n), 0) > 100".into(),
            0 => "count(*) > 5".into(),
            1 => {
                let v = self.rng.i64(0..20);
                format!("count(*) > {}", self.big(v))
            }
            2 => "sum(n) < 1000 AND min(g) >= 0".into(),
            3 => "max(s) > 100".into(),
            4 => "count(DISTINCT h) >= 2".into(),
            5 => "avg(g) > 2".into(),
            6 => "bool_or(b)".into(),
            7 => "min(d) < '2000-01-01'".into(),
            _ => {
                let a = self.rng.i64(-500..500);
                format!("sum(g) BETWEEN {} AND {}", self.big(a), self.big(a + 2000))
            }
        }
    }

    fn finish(&mut self, form: &'static str, sql: String, order: Order, kinds: Vec<Kind>) -> Q {
        Q {
            form,
            sql,
            params: std::mem::take(&mut self.params),
            extended: self.extended,
            order,
            kinds,
        }
    }

    /// Plain projection with filters, ORDER BY mixes, LIMIT/OFFSET.
    fn plain(&mut self) -> Q {
        let items: Vec<Item> = if self.chance(0.1) {
            ITEM_COLS
                .iter()
                .map(|c| Item {
                    expr: c.to_string(),
                    alias: None,
                    kind: Kind::Exact,
                    key: None,
                })
                .collect()
        } else {
            let n = self.rng.usize(1..5);
            let exprs = self.pick_distinct(PROJ, n);
            exprs
                .iter()
                .enumerate()
                .map(|(i, e)| Item {
                    expr: e.to_string(),
                    alias: self.chance(0.15).then(|| format!("c{i}")),
                    kind: Kind::Exact,
                    key: None,
                })
                .collect()
        };
        let star = items.len() == ITEM_COLS.len()
            && items.iter().all(|i| i.alias.is_none())
            && self.chance(0.8);
        let sel = if star {
            "*".to_string()
        } else {
            items.iter().map(Item::sql).collect::<Vec<_>>().join(", ")
        };
        let wh = self.where_clause(false);
        let mut sql = format!("SELECT {sel} FROM items{wh}");
        if self.chance(0.25) {
            return self.finish("plain", sql, Order::None, vec![]);
        }
        let (mut keys, mut idx, mut projected) = (Vec::new(), Vec::new(), true);
        for _ in 0..self.rng.usize(1..4) {
            if self.chance(0.7) {
                let pos = self.rng.usize(..items.len());
                let r = self.item_ref(&items, pos);
                idx.push(pos);
                keys.push(self.order_key(&r));
            } else {
                // Any expression, often not in the select list.
                let e = self.pick(PROJ);
                match items.iter().position(|it| it.expr == e) {
                    Some(p) => idx.push(p),
                    None => projected = false,
                }
                keys.push(self.order_key(e));
            }
        }
        let limit = self.chance(0.4);
        let total = limit || !projected || self.chance(0.5);
        if total {
            keys.push(self.order_key("id"));
        }
        write!(sql, " ORDER BY {}", keys.join(", ")).unwrap();
        if limit {
            sql += &self.limit();
        }
        let form = if limit {
            "plain+order+limit"
        } else {
            "plain+order"
        };
        self.finish(
            form,
            sql,
            if total {
                Order::Total
            } else {
                Order::Keys(idx)
            },
            vec![],
        )
    }

    /// Aggregates without GROUP BY (one row).
    fn aggregate(&mut self) -> Q {
        let aggs: Vec<Agg> = (0..self.rng.usize(1..5)).map(|_| self.agg()).collect();
        let uses_f = aggs.iter().any(|a| a.uses_f);
        let wh = self.where_clause(uses_f);
        let sel: Vec<String> = aggs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if self.chance(0.15) {
                    format!("{} AS a{i}", a.sql)
                } else {
                    a.sql.clone()
                }
            })
            .collect();
        // Forms the router has merged from the start (count/sum/min/max, no
        // DISTINCT) are labelled apart in the summary.
        let basic = aggs.iter().all(|a| {
            ["count(", "sum(", "min(", "max("]
                .iter()
                .any(|p| a.sql.starts_with(p))
                && !a.sql.contains("DISTINCT")
        });
        let kinds = aggs.iter().map(|a| a.kind).collect();
        let sql = format!("SELECT {} FROM items{wh}", sel.join(", "));
        self.finish(
            if aggs.iter().any(|a| a.fin) {
                "agg (final step)"
            } else if basic {
                "agg(count/sum/min/max)"
            } else {
                "agg"
            },
            sql,
            Order::None,
            kinds,
        )
    }

    /// Aggregates with GROUP BY, HAVING, ORDER BY (LIMIT only when the ORDER
    /// BY is total over the group key).
    fn grouped(&mut self) -> Q {
        let nkeys = self.rng.usize(1..3);
        let gkeys = self.pick_distinct(GKEYS, nkeys);
        let aggs: Vec<Agg> = (0..self.rng.usize(1..4)).map(|_| self.agg()).collect();
        let mut items: Vec<Item> = Vec::new();
        for (ki, k) in gkeys.iter().enumerate() {
            if self.chance(0.85) {
                let alias = self.chance(0.2).then(|| format!("k{ki}"));
                items.push(Item {
                    expr: k.to_string(),
                    alias,
                    kind: Kind::Exact,
                    key: Some(ki),
                });
            }
        }
        for (ai, a) in aggs.iter().enumerate() {
            let alias = self.chance(0.2).then(|| format!("a{ai}"));
            items.push(Item {
                expr: a.sql.clone(),
                alias,
                kind: a.kind,
                key: None,
            });
        }
        if self.chance(0.25) {
            self.rng.shuffle(&mut items);
        }
        let wh = self.where_clause(aggs.iter().any(|a| a.uses_f));
        let gb: Vec<String> = gkeys
            .iter()
            .enumerate()
            .map(
                |(ki, k)| match items.iter().position(|it| it.key == Some(ki)) {
                    Some(pos) => self.item_ref(&items, pos),
                    None => k.to_string(),
                },
            )
            .collect();
        let sel: Vec<String> = items.iter().map(Item::sql).collect();
        let mut sql = format!(
            "SELECT {} FROM items{wh} GROUP BY {}",
            sel.join(", "),
            gb.join(", ")
        );
        let mut fin = aggs.iter().any(|a| a.fin);
        if self.chance(0.3) {
            let h = self.having();
            fin |= h.contains(['%', '*', '-']) || h.contains("coalesce");
            write!(sql, " HAVING {h}").unwrap();
        }
        let kinds: Vec<Kind> = items.iter().map(|it| it.kind).collect();
        if self.chance(0.4) {
            // DISTINCT over the groups' rows (exact values only: float sums
            // may differ in their last bits, and so in what is distinct).
            if kinds.iter().all(|k| *k == Kind::Exact) && self.chance(0.3) {
                let sql = sql.replacen("SELECT ", "SELECT DISTINCT ", 1);
                let form = if fin {
                    "group distinct (final step)"
                } else {
                    "group distinct"
                };
                return self.finish(form, sql, Order::None, kinds);
            }
            let form = if fin { "group (final step)" } else { "group" };
            return self.finish(form, sql, Order::None, kinds);
        }
        // Sort keys: select items (never float aggregates, whose last bits
        // may differ), or an aggregate that may not be in the select list.
        let sortable: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].kind == Kind::Exact)
            .collect();
        let (mut keys, mut idx, mut projected) = (Vec::new(), Vec::new(), true);
        for _ in 0..self.rng.usize(1..3) {
            if !sortable.is_empty() && self.chance(0.8) {
                let pos = self.pick(&sortable);
                let r = self.item_ref(&items, pos);
                idx.push(pos);
                keys.push(self.order_key(&r));
            } else {
                let a = self.pick(&["count(*)", "max(s)", "min(h)", "sum(g)"]);
                projected = false;
                keys.push(self.order_key(a));
            }
        }
        let limit = self.chance(0.35);
        let total = limit || !projected || self.chance(0.5);
        if total {
            // Every group key in the ORDER BY: groups are distinct on it.
            for k in &gkeys {
                keys.push(self.order_key(k));
            }
        }
        write!(sql, " ORDER BY {}", keys.join(", ")).unwrap();
        if limit {
            sql += &self.limit();
        }
        let form = match (limit, fin) {
            (true, false) => "group+order+limit",
            (false, false) => "group+order",
            (true, true) => "group+order+limit (final step)",
            (false, true) => "group+order (final step)",
        };
        self.finish(
            form,
            sql,
            if total {
                Order::Total
            } else {
                Order::Keys(idx)
            },
            kinds,
        )
    }

    /// SELECT DISTINCT, ordered by all columns (total, LIMIT allowed), by
    /// some of them, or not at all.
    fn distinct(&mut self) -> Q {
        let n = self.rng.usize(1..4);
        let cols = self.pick_distinct(DPOOL, n);
        let items: Vec<Item> = cols
            .iter()
            .map(|c| Item {
                expr: c.to_string(),
                alias: None,
                kind: Kind::Exact,
                key: None,
            })
            .collect();
        let wh = self.where_clause(false);
        let mut sql = format!("SELECT DISTINCT {} FROM items{wh}", cols.join(", "));
        let r = self.rng.u32(0..10);
        if r < 3 {
            return self.finish("distinct", sql, Order::None, vec![]);
        }
        let mut order: Vec<usize> = (0..items.len()).collect();
        self.rng.shuffle(&mut order);
        let total = r < 8;
        if !total {
            order.truncate(self.rng.usize(1..=items.len()));
        }
        let keys: Vec<String> = order
            .iter()
            .map(|&p| {
                let r = self.item_ref(&items, p);
                self.order_key(&r)
            })
            .collect();
        write!(sql, " ORDER BY {}", keys.join(", ")).unwrap();
        if total && self.rng.bool() {
            sql += &self.limit();
        }
        if total {
            self.finish("distinct+order", sql, Order::Total, vec![])
        } else {
            self.finish("distinct+order", sql, Order::Keys(order), vec![])
        }
    }

    /// SELECT DISTINCT ON (...) with ORDER BY starting with the DISTINCT ON
    /// expressions and ending in id.
    fn distinct_on(&mut self) -> Q {
        let n = self.rng.usize(1..3);
        let on = self.pick_distinct(DON, n);
        let mut sel: Vec<String> = on
            .iter()
            .filter(|_| self.chance(0.7))
            .map(|e| e.to_string())
            .collect();
        let extra = self.rng.usize(1..4);
        for e in self.pick_distinct(PROJ, extra) {
            if !sel.iter().any(|s| s == e) {
                sel.push(e.to_string());
            }
        }
        let wh = self.where_clause(false);
        let mut keys: Vec<String> = on.iter().map(|e| self.order_key(e)).collect();
        for _ in 0..self.rng.usize(0..3) {
            let e = self.pick(PROJ);
            keys.push(self.order_key(e));
        }
        keys.push(self.order_key("id"));
        let mut sql = format!(
            "SELECT DISTINCT ON ({}) {} FROM items{wh} ORDER BY {}",
            on.join(", "),
            sel.join(", "),
            keys.join(", ")
        );
        if self.chance(0.4) {
            sql += &self.limit();
        }
        self.finish("distinct on", sql, Order::Total, vec![])
    }

    /// Queries over `events` (sharded on k), and joins on one key.
    fn events(&mut self) -> Q {
        let form = self.rng.u32(0..5);
        if form == 4 {
            // Both sides pinned to the same key: a single-shard join.
            let id = self.some_id();
            let (a, b) = (self.big(id), self.big(id));
            let sql = format!(
                "SELECT i.id, i.g, i.h, e.id, e.v FROM items i JOIN events e ON e.k = i.id \
                 WHERE i.id = {a} AND e.k = {b} ORDER BY e.id"
            );
            return self.finish("events join one key", sql, Order::Total, vec![]);
        }
        let wh = match self.rng.u32(0..4) {
            0 => {
                let v = self.rng.i32(-50..500);
                format!(" WHERE v > {}", self.int(v))
            }
            1 => " WHERE v IS NOT NULL".to_string(),
            2 => {
                let ks: Vec<i64> = (0..self.rng.usize(1..6)).map(|_| self.some_id()).collect();
                let vs: Vec<String> = ks.iter().map(|k| self.big(*k)).collect();
                format!(" WHERE k IN ({})", vs.join(", "))
            }
            _ => String::new(),
        };
        match form {
            0 => {
                let l = self.rng.i64(1..30);
                let sql = format!(
                    "SELECT k, count(*), sum(v), min(v), max(v) FROM events{wh} GROUP BY k ORDER BY k DESC LIMIT {}",
                    self.big(l)
                );
                self.finish("events", sql, Order::Total, vec![])
            }
            1 => {
                let l = self.rng.i64(1..30);
                let sql = format!(
                    "SELECT k, id, v FROM events{wh} ORDER BY v DESC NULLS LAST, k, id LIMIT {}",
                    self.big(l)
                );
                self.finish("events", sql, Order::Total, vec![])
            }
            2 => {
                let sql = format!(
                    "SELECT count(*), count(v), sum(v), avg(v), min(v), max(v) FROM events{wh}"
                );
                self.finish("events", sql, Order::None, vec![])
            }
            _ => {
                let sql = format!(
                    "SELECT v % 5 AS m, count(*), sum(k) FROM events{wh} GROUP BY 1 ORDER BY 1"
                );
                self.finish("events", sql, Order::Total, vec![])
            }
        }
    }

    /// Queries over `logs`, whose keys were generated: the same ids on
    /// both sides.
    fn logs(&mut self) -> Q {
        let m = self.rng.i64(2..7);
        if self.chance(0.5) {
            let (r, l) = (self.rng.i64(0..m), self.rng.i64(1..40));
            let sql = format!(
                "SELECT id, item, v FROM logs WHERE item % {} = {} ORDER BY id DESC LIMIT {}",
                self.big(m),
                self.big(r),
                self.big(l)
            );
            self.finish("logs (generated keys)", sql, Order::Total, vec![])
        } else {
            let sql = format!(
                "SELECT v % {} AS r, count(*), sum(id), min(id), max(item) FROM logs GROUP BY 1 ORDER BY 1",
                self.int(m as i32)
            );
            self.finish("logs (generated keys)", sql, Order::Total, vec![])
        }
    }

    /// Co-located joins: tables of one keyspace joined on their sharding
    /// keys (items.id = events.k = logs.id), also outer, three tables, with
    /// the reference table `kinds`, merged like single-table SELECTs.
    fn joins(&mut self) -> Q {
        let g = self.rng.i32(0..10);
        let l = self.rng.i64(1..40);
        let sv = self.rng.i16(-300..300);
        let (form, sql) = match self.rng.u32(0..6) {
            0 => (
                "join",
                format!(
                    "SELECT i.id, i.g, e.id, e.v FROM items i JOIN events e ON e.k = i.id WHERE i.g = {} ORDER BY i.id, e.id LIMIT {}",
                    self.int(g),
                    self.big(l)
                ),
            ),
            1 => (
                "join",
                "SELECT i.g, count(*), sum(e.v), min(e.id) FROM items i JOIN events e ON i.id = e.k GROUP BY i.g ORDER BY i.g".to_string(),
            ),
            2 => (
                "join outer",
                format!(
                    "SELECT i.id, count(e.id), max(e.v) FROM items i LEFT JOIN events e ON e.k = i.id WHERE i.s > {} GROUP BY i.id ORDER BY i.id LIMIT {}",
                    self.small(sv),
                    self.big(l)
                ),
            ),
            3 => (
                "join 3 tables",
                "SELECT i.id, e.id, l.item, l.v FROM items i JOIN events e ON e.k = i.id JOIN logs l ON l.id = e.k ORDER BY i.id, e.id".to_string(),
            ),
            4 => (
                "join reference",
                "SELECT k.name, count(*), sum(e.v) FROM items i JOIN events e ON e.k = i.id JOIN kinds k ON k.g = i.g GROUP BY k.name ORDER BY k.name".to_string(),
            ),
            _ => (
                "join (final step)",
                format!(
                    "SELECT i.g % 3 AS r, sum(e.v) / nullif(count(*), 0), string_agg(e.id::text, ',' ORDER BY e.k, e.id) FROM items i JOIN events e ON e.k = i.id WHERE i.g <> {} GROUP BY 1 ORDER BY 1",
                    self.int(g)
                ),
            ),
        };
        self.finish(form, sql, Order::Total, vec![])
    }

    /// Subqueries: correlated on the sharding key (pushed down to every
    /// shard with the outer query), and uncorrelated ones over sharded
    /// tables, which run first.
    fn subqueries(&mut self) -> Q {
        if self.chance(0.6) {
            return self.uncorrelated();
        }
        let g = self.rng.i32(0..10);
        let l = self.rng.i64(1..40);
        let v = self.rng.i32(-50..500);
        let sv = self.rng.i16(-300..300);
        let (form, sql) = match self.rng.u32(0..6) {
            0 => (
                "correlated EXISTS",
                format!(
                    "SELECT i.id, i.g FROM items i WHERE EXISTS (SELECT 1 FROM events e WHERE e.k = i.id AND e.v > {}) ORDER BY i.id LIMIT {}",
                    self.int(v),
                    self.big(l)
                ),
            ),
            1 => (
                "correlated scalar",
                format!(
                    "SELECT i.id, (SELECT count(*) FROM events e WHERE e.k = i.id) AS n FROM items i WHERE i.g = {} ORDER BY n DESC, i.id LIMIT {}",
                    self.int(g),
                    self.big(l)
                ),
            ),
            2 => (
                "correlated NOT EXISTS",
                "SELECT i.g, count(*) FROM items i WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.k = i.id) GROUP BY i.g ORDER BY i.g".to_string(),
            ),
            3 => (
                "correlated LATERAL",
                format!(
                    "SELECT i.id, x.s, x.c FROM items i, LATERAL (SELECT sum(e.v) AS s, count(*) AS c FROM events e WHERE e.k = i.id) x WHERE i.s > {} ORDER BY i.id LIMIT {}",
                    self.small(sv),
                    self.big(l)
                ),
            ),
            4 => (
                "correlated IN",
                format!(
                    "SELECT l.id, l.v FROM logs l WHERE l.v IN (SELECT e.v FROM events e WHERE e.k = l.id) OR l.v < {} ORDER BY l.id LIMIT {}",
                    self.int(v - 400),
                    self.big(l)
                ),
            ),
            _ => (
                "correlated in aggregate",
                "SELECT i.g % 4 AS r, sum((SELECT max(e.v) FROM events e WHERE e.k = i.id)), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM logs l WHERE l.id = i.id AND l.v > 10)) FROM items i GROUP BY 1 ORDER BY 1".to_string(),
            ),
        };
        self.finish(form, sql, Order::Total, vec![])
    }

    /// Uncorrelated subqueries over sharded tables: run first, their rows
    /// substituted (in the extended protocol with the Bind's values
    /// written in).
    fn uncorrelated(&mut self) -> Q {
        let g = self.rng.i32(0..10);
        let l = self.rng.i64(1..40);
        let v = self.rng.i32(-50..500);
        let sv = self.rng.i16(-300..300);
        let r = self.rng.i64(0..5);
        let (form, sql) = match self.rng.u32(0..11) {
            0 => (
                "subquery IN",
                format!(
                    "SELECT i.id, i.g FROM items i WHERE i.id IN (SELECT e.k FROM events e WHERE e.v > {}) ORDER BY i.id LIMIT {}",
                    self.int(v),
                    self.big(l)
                ),
            ),
            1 => (
                "subquery = scalar",
                format!(
                    "SELECT id, g, s FROM items WHERE g = (SELECT max(g) FROM items WHERE s < {}) ORDER BY id LIMIT {}",
                    self.small(sv),
                    self.big(l)
                ),
            ),
            2 => (
                "subquery in select list",
                format!(
                    "SELECT g, count(*), (SELECT count(*) FROM events WHERE v > {}) AS ne, (SELECT max(v) FROM events) FROM items GROUP BY g ORDER BY g",
                    self.int(v)
                ),
            ),
            3 => (
                "subquery EXISTS",
                format!(
                    "SELECT count(*), sum(s) FROM items WHERE g = {} AND EXISTS (SELECT 1 FROM events WHERE v > {})",
                    self.int(g),
                    self.int(v)
                ),
            ),
            4 => (
                "subquery NOT IN",
                format!(
                    "SELECT count(*), sum(g) FROM items WHERE id NOT IN (SELECT k FROM events WHERE k IS NOT NULL AND v < {})",
                    self.int(v)
                ),
            ),
            5 => (
                "subquery derived table",
                format!(
                    "SELECT x.r, sum(x.n), count(*) FROM (SELECT g % 3 AS r, count(*) AS n FROM items WHERE s > {} GROUP BY g) x GROUP BY x.r ORDER BY x.r",
                    self.small(sv)
                ),
            ),
            6 => (
                "subquery derived table with LIMIT",
                format!(
                    "SELECT * FROM (SELECT id, g, n FROM items ORDER BY g DESC NULLS LAST, id LIMIT {}) t ORDER BY id",
                    self.big(l)
                ),
            ),
            7 => (
                "subquery CTE",
                format!(
                    "WITH top AS (SELECT k, sum(v) AS s FROM events GROUP BY k ORDER BY s DESC NULLS LAST, k LIMIT {}) SELECT i.id, i.g, top.s FROM items i JOIN top ON top.k = i.id ORDER BY i.id",
                    self.big(l)
                ),
            ),
            8 => (
                "subquery nested",
                format!(
                    "SELECT count(*), min(id) FROM items WHERE id IN (SELECT k FROM events WHERE v IN (SELECT v FROM logs WHERE item % 5 = {}))",
                    self.big(r)
                ),
            ),
            9 => (
                "subquery set operation",
                format!(
                    "(SELECT id FROM items WHERE g = {}) UNION (SELECT k FROM events WHERE v > {}) ORDER BY 1 LIMIT {}",
                    self.int(g),
                    self.int(v),
                    self.big(l)
                ),
            ),
            _ => (
                "subquery and correlated",
                format!(
                    "SELECT i.id FROM items i WHERE EXISTS (SELECT 1 FROM events e WHERE e.k = i.id AND e.v IN (SELECT l.v FROM logs l WHERE l.item > {})) ORDER BY i.id LIMIT {}",
                    self.big(r * 500),
                    self.big(l)
                ),
            ),
        };
        let order = if sql.contains("ORDER BY") {
            Order::Total
        } else {
            Order::None
        };
        self.finish(form, sql, order, vec![])
    }

    /// `COPY (query) TO STDOUT` (tokio-postgres `copy_out`, extended
    /// protocol; COPY takes no parameters, so literals), each output line
    /// one row.
    fn copy(&mut self) -> Q {
        let was = std::mem::replace(&mut self.extended, false);
        let g = self.rng.i32(0..10);
        let v = self.rng.i32(-50..500);
        let l = self.rng.i64(1..40);
        let (sql, order) = match self.rng.u32(0..7) {
            6 => (
                format!("COPY (SELECT * FROM events WHERE v > {v} ORDER BY k, id LIMIT {l}) TO STDOUT"),
                Order::Total,
            ),
            5 => (
                format!("COPY (SELECT id, g FROM items WHERE id IN (SELECT k FROM events WHERE v > {v}) ORDER BY id) TO STDOUT (FORMAT csv)"),
                Order::Total,
            ),
            0 => (
                format!("COPY (SELECT id, g, h, n, d, tz FROM items WHERE g = {g} ORDER BY id) TO STDOUT"),
                Order::Total,
            ),
            1 => (
                "COPY (SELECT g, count(*), sum(n), string_agg(h, ';' ORDER BY id) FROM items GROUP BY g ORDER BY g) TO STDOUT WITH (FORMAT csv, HEADER)".to_string(),
                Order::Total,
            ),
            2 => (
                format!("COPY (SELECT k, v FROM events WHERE v > {v}) TO STDOUT (FORMAT csv, NULL 'nil')"),
                Order::None,
            ),
            3 => (
                format!("COPY (SELECT i.id, e.id, e.v FROM items i JOIN events e ON e.k = i.id ORDER BY i.id, e.id LIMIT {l}) TO STDOUT (FORMAT csv, FORCE_QUOTE *)"),
                Order::Total,
            ),
            _ => (
                format!("COPY (SELECT id, f, b FROM items WHERE s > {} ORDER BY id DESC LIMIT {l}) TO STDOUT", v - 200),
                Order::Total,
            ),
        };
        self.extended = was;
        let mut q = self.finish("copy (query)", sql, order, vec![]);
        q.extended = true;
        q
    }

    /// `*` and `t.*` in merged SELECTs: written out by the router from the
    /// tables' columns (ORDER BY/LIMIT, DISTINCT, GROUP BY, joins).
    fn stars(&mut self) -> Q {
        let g = self.rng.i32(0..10);
        let v = self.rng.i32(-50..500);
        let l = self.rng.i64(1..40);
        let (form, sql, order) = match self.rng.u32(0..6) {
            0 => (
                "star+order+limit",
                format!(
                    "SELECT * FROM events WHERE v > {} ORDER BY v DESC NULLS LAST, k, id LIMIT {}",
                    self.int(v),
                    self.big(l)
                ),
                Order::Total,
            ),
            1 => (
                "distinct star",
                format!(
                    "SELECT DISTINCT k.* FROM items i JOIN kinds k ON k.g = i.g WHERE i.g <> {}",
                    self.int(g)
                ),
                Order::None,
            ),
            2 => (
                "distinct star",
                "SELECT DISTINCT e.v, k.* FROM items i JOIN events e ON e.k = i.id JOIN kinds k ON k.g = i.g ORDER BY 1, 2".to_string(),
                Order::Total,
            ),
            3 => (
                "star group by",
                format!(
                    "SELECT * FROM events GROUP BY k, id ORDER BY 3, 1, 2 LIMIT {}",
                    self.big(l)
                ),
                Order::Total,
            ),
            4 => (
                "star join",
                format!(
                    "SELECT e.*, i.g FROM items i JOIN events e ON e.k = i.id WHERE i.g = {} ORDER BY e.k, e.id LIMIT {}",
                    self.int(g),
                    self.big(l)
                ),
                Order::Total,
            ),
            _ => (
                "star join",
                format!(
                    "SELECT * FROM items i, events e WHERE e.k = i.id AND e.v > {} ORDER BY e.k, e.id",
                    self.int(v)
                ),
                Order::Total,
            ),
        };
        self.finish(form, sql, order, vec![])
    }

    fn query(&mut self) -> Q {
        match self.rng.u32(0..100) {
            0..=29 => self.plain(),
            30..=44 => self.aggregate(),
            45..=64 => self.grouped(),
            65..=74 => self.distinct(),
            75..=84 => self.distinct_on(),
            85..=86 => self.logs(),
            87..=88 => self.stars(),
            89..=91 => self.joins(),
            92..=96 => self.subqueries(),
            97 => self.copy(),
            _ => self.events(),
        }
    }
}

// ---------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------

/// A write applied to both databases; `new_ids`/`deleted` update the live id
/// list once the reference accepted it.
struct W {
    sql: String,
    params: Vec<Param>,
    extended: bool,
    new_ids: Vec<i64>,
    deleted: Option<i64>,
}

/// A `g` value and a LIMIT for `w`: `$1` and `$2` bound to them in the
/// extended protocol, else the values as literals.
fn g_and_limit(w: &mut W, extended: bool, g: i32, limit: i64) -> (String, String) {
    if extended {
        w.params = vec![Param::I32(g), Param::I64(limit)];
        ("$1".to_string(), "$2".to_string())
    } else {
        (g.to_string(), limit.to_string())
    }
}

fn gen_write(rng: &mut Rng, ids: &[i64], next_id: &mut i64) -> W {
    let extended = chance(rng, 0.3);
    let mut w = W {
        sql: String::new(),
        params: Vec::new(),
        extended,
        new_ids: Vec::new(),
        deleted: None,
    };
    let existing = if ids.is_empty() { 1 } else { pick(rng, ids) };
    match rng.u32(0..12) {
        // INSERT ... SELECT, co-located: the target's key is the source's
        // key, each shard inserts its own rows (both protocols).
        9 => {
            *next_id += 1;
            w.sql = format!(
                "INSERT INTO events (k, id, v) SELECT id, {}, g FROM items WHERE g = {} AND s > 0",
                900_000 + *next_id,
                rng.i32(0..10)
            );
        }
        // INSERT ... SELECT through the router: the rows of a merged
        // SELECT inserted under new keys (both protocols; parameters in
        // the extended one).
        10 => {
            let base = 1_000_000_000 + *next_id * 100_000;
            *next_id += 1;
            let (gs, ls) = g_and_limit(&mut w, extended, rng.i32(0..10), rng.i64(1..20));
            w.sql = format!(
                "INSERT INTO items (id, g, h, n, s, b) SELECT id + {base}, g, h, n, s, b FROM items WHERE g = {gs} ORDER BY id LIMIT {ls}"
            );
        }
        // Generated keys for the rows of an ordered SELECT: the same ids
        // on both sides.
        11 => {
            let (gs, ls) = g_and_limit(&mut w, extended, rng.i32(0..10), rng.i64(1..15));
            w.sql = format!(
                "INSERT INTO logs (item, v) SELECT id, g FROM items WHERE g = {gs} ORDER BY id DESC LIMIT {ls}"
            );
        }
        // Generated keys: `logs` rows without their key, both protocols,
        // the returned ids compared.
        7 => {
            let n = rng.usize(1..5);
            if extended {
                let rows: Vec<String> = (0..n)
                    .map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2))
                    .collect();
                for _ in 0..n {
                    w.params.extend([
                        Param::I64(rng.i64(1..20_000)),
                        Param::I32(rng.i32(-50..500)),
                    ]);
                }
                w.sql = format!(
                    "INSERT INTO logs (item, v) VALUES {} RETURNING id, v",
                    rows.join(", ")
                );
            } else {
                let rows: Vec<String> = (0..n).map(|_| log_row(rng)).collect();
                w.sql = format!(
                    "INSERT INTO logs (item, v) VALUES {} RETURNING id, v",
                    rows.join(", ")
                );
            }
        }
        // No column list: the router finds the key by the table's columns.
        8 if !extended => {
            *next_id += 1;
            w.new_ids.push(*next_id);
            w.sql = format!(
                "INSERT INTO items VALUES {}",
                item_row(rng, *next_id, false)
            );
        }
        // Multi-row INSERT (split by shard), RETURNING rows compared in
        // order.
        0 | 1 if !extended => {
            let rows: Vec<String> = (0..rng.usize(1..7))
                .map(|_| {
                    *next_id += 1;
                    w.new_ids.push(*next_id);
                    item_row(rng, *next_id, false)
                })
                .collect();
            w.sql = format!("{ITEMS_INSERT}{}", rows.join(", "));
            if chance(rng, 0.5) {
                w.sql.push_str(" RETURNING id, g");
            }
        }
        // The same with parameters (drivers' bulk inserts): several rows,
        // one statement, its rows on several shards.
        0 | 1 => {
            let mut rows = Vec::new();
            for r in 0..rng.usize(1..7) {
                *next_id += 1;
                w.new_ids.push(*next_id);
                let n = r * 5;
                rows.push(format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5
                ));
                w.params.extend([
                    Param::I64(*next_id),
                    Param::I32(gen_g(rng)),
                    Param::Text(gen_text(rng)),
                    Param::I16(rng.i16(-300..=300)),
                    Param::Bool(rng.bool()),
                ]);
            }
            w.sql = format!(
                "INSERT INTO items (id, g, h, s, b) VALUES {}",
                rows.join(", ")
            );
            if chance(rng, 0.5) {
                w.sql.push_str(" RETURNING id, g");
            }
        }
        2 => {
            let k = *next_id + 1; // events for an id that does not exist yet: fine, no FK
            *next_id += 1;
            let rows = event_rows(rng, k);
            w.sql = format!("INSERT INTO events (k, id, v) VALUES {}", rows.join(", "));
            w.extended = false;
        }
        3 if extended => {
            w.sql = "UPDATE items SET g = $1 WHERE id = $2".into();
            w.params = vec![Param::I32(gen_g(rng)), Param::I64(existing)];
        }
        3 => w.sql = format!("UPDATE items SET g = {} WHERE id = {existing}", gen_g(rng)),
        4 => {
            w.sql = format!("UPDATE items SET g = NULL, h = upper(h), n = n + 1, f = f * 2 WHERE id = {existing}");
            w.extended = false;
        }
        5 => {
            // A multi-shard UPDATE.
            w.sql = format!(
                "UPDATE items SET b = NOT b, s = s + 1 WHERE g = {} AND s < 300",
                rng.i32(4..10)
            );
            w.extended = false;
        }
        _ => {
            w.deleted = Some(existing);
            if extended {
                w.sql = "DELETE FROM items WHERE id = $1".into();
                w.params = vec![Param::I64(existing)];
            } else {
                w.sql = format!("DELETE FROM items WHERE id = {existing}");
            }
        }
    }
    w
}

/// Runs write `w`: its row count and, for `RETURNING id, g`, the returned
/// rows as text, in the order they came.
async fn exec_write(c: &Client, w: &W) -> Result<(u64, Vec<String>), tokio_postgres::Error> {
    let returning = w.sql.ends_with("RETURNING id, g") || w.sql.ends_with("RETURNING id, v");
    if w.extended {
        let params: Vec<&(dyn ToSql + Sync)> = w.params.iter().map(Param::as_sql).collect();
        if !returning {
            return Ok((c.execute(w.sql.as_str(), &params).await?, Vec::new()));
        }
        let rows = c.query(w.sql.as_str(), &params).await?;
        let text = rows
            .iter()
            .map(|r| {
                format!(
                    "{:?} {:?}",
                    r.get::<_, Option<i64>>(0),
                    r.get::<_, Option<i32>>(1)
                )
            })
            .collect::<Vec<_>>();
        Ok((rows.len() as u64, text))
    } else {
        let msgs = c.simple_query(&w.sql).await?;
        let mut rows = Vec::new();
        let mut n = 0;
        for m in &msgs {
            match m {
                SimpleQueryMessage::CommandComplete(k) => n += *k,
                SimpleQueryMessage::Row(r) => rows.push(format!(
                    "{:?} {:?}",
                    r.get(0).and_then(|v| v.parse::<i64>().ok()),
                    r.get(1).and_then(|v| v.parse::<i32>().ok())
                )),
                _ => {}
            }
        }
        Ok((n, rows))
    }
}

// ---------------------------------------------------------------------------
// Execution and result rendering
// ---------------------------------------------------------------------------

/// A result set: column descriptions (name, plus type in the extended
/// protocol) and rows of text cells.
#[derive(Debug)]
struct Rs {
    cols: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

/// A cell of a binary (extended-protocol) result, rendered to a canonical
/// string. tokio-postgres has no FromSql for numeric, so this decodes the
/// types the generator produces; anything else is rendered as hex (still
/// canonical for comparison).
struct Cell(Option<String>);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell(Some(render_binary(ty, raw))))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn render_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v}")
    }
}

/// (year, month, day) of a day number counted from 1970-01-01, proleptic
/// Gregorian (H. Hinnant's civil_from_days); year 0 = 1 BC.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A date given as days since 2000-01-01 (PostgreSQL's epoch).
fn render_date(days: i64) -> String {
    let (y, m, d) = civil(days + 10_957);
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// A timestamp given as microseconds since 2000-01-01 00:00.
fn render_ts(us: i64) -> String {
    match us {
        i64::MAX => return "infinity".into(),
        i64::MIN => return "-infinity".into(),
        _ => {}
    }
    const DAY: i64 = 86_400_000_000;
    let (days, t) = (us.div_euclid(DAY), us.rem_euclid(DAY));
    let (secs, frac) = (t / 1_000_000, t % 1_000_000);
    let mut s = format!(
        "{} {:02}:{:02}:{:02}",
        render_date(days),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        write!(s, ".{}", format!("{frac:06}").trim_end_matches('0')).unwrap();
    }
    s
}

/// numeric binary format: ndigits, weight, sign, dscale (i16/u16 each), then
/// ndigits base-10000 digits, the first one at 10000^weight.
fn render_numeric(raw: &[u8]) -> Option<String> {
    let word =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*raw.get(i)?, *raw.get(i + 1)?])) };
    let (ndigits, weight, sign, dscale) = (
        word(0)? as usize,
        word(2)? as i16 as i64,
        word(4)?,
        word(6)? as usize,
    );
    if raw.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digit = |i: i64| {
        if i >= 0 && (i as usize) < ndigits {
            word(8 + 2 * i as usize).unwrap_or(0)
        } else {
            0
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                write!(s, "{}", digit(0)).unwrap();
            } else {
                write!(s, "{:04}", digit(i)).unwrap();
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            write!(frac, "{:04}", digit(i)).unwrap();
            i += 1;
        }
        frac.truncate(dscale);
        write!(s, ".{frac}").unwrap();
    }
    Some(s)
}

fn render_binary(ty: &Type, raw: &[u8]) -> String {
    fn arr<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
        raw.try_into().ok()
    }
    let r = match *ty {
        Type::INT2 => arr::<2>(raw).map(|b| i16::from_be_bytes(b).to_string()),
        Type::INT4 => arr::<4>(raw).map(|b| i32::from_be_bytes(b).to_string()),
        Type::INT8 => arr::<8>(raw).map(|b| i64::from_be_bytes(b).to_string()),
        Type::FLOAT4 => arr::<4>(raw).map(|b| render_float(f32::from_be_bytes(b) as f64)),
        Type::FLOAT8 => arr::<8>(raw).map(|b| render_float(f64::from_be_bytes(b))),
        Type::BOOL => arr::<1>(raw).map(|b| if b[0] != 0 { "t" } else { "f" }.to_string()),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            std::str::from_utf8(raw).ok().map(str::to_string)
        }
        Type::NUMERIC => render_numeric(raw),
        Type::DATE => arr::<4>(raw).map(|b| match i32::from_be_bytes(b) {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            d => render_date(d as i64),
        }),
        Type::TIMESTAMP => arr::<8>(raw).map(|b| render_ts(i64::from_be_bytes(b))),
        Type::TIMESTAMPTZ => {
            arr::<8>(raw).map(|b| format!("{}+00", render_ts(i64::from_be_bytes(b))))
        }
        Type::UUID => arr::<16>(raw).map(|b| {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        }),
        _ => None,
    };
    r.unwrap_or_else(|| {
        format!(
            "\\x{}",
            raw.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )
    })
}

/// Runs `q` on `c`: the simple protocol yields PostgreSQL's text cells; the
/// extended protocol binary cells rendered by [`Cell`].
async fn exec(c: &Client, q: &Q) -> Result<Rs, tokio_postgres::Error> {
    if q.sql.starts_with("COPY") {
        use futures_util::TryStreamExt;
        let data: Vec<bytes::Bytes> = c.copy_out(q.sql.as_str()).await?.try_collect().await?;
        let text: Vec<u8> = data.concat();
        let rows = String::from_utf8_lossy(&text)
            .lines()
            .map(|l| vec![Some(l.to_string())])
            .collect();
        return Ok(Rs {
            cols: vec!["copy".into()],
            rows,
        });
    }
    if q.extended {
        let stmt = c.prepare(&q.sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = q.params.iter().map(Param::as_sql).collect();
        let rows = c.query(&stmt, &params).await?;
        let cols = stmt
            .columns()
            .iter()
            .map(|c| format!("{}:{}", c.name(), c.type_()))
            .collect();
        let rows = rows
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, Cell>(i).0).collect())
            .collect();
        Ok(Rs { cols, rows })
    } else {
        let mut rs = Rs {
            cols: Vec::new(),
            rows: Vec::new(),
        };
        for m in c.simple_query(&q.sql).await? {
            match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    rs.cols = cols.iter().map(|c| c.name().to_string()).collect()
                }
                SimpleQueryMessage::Row(r) => rs
                    .rows
                    .push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
                _ => {}
            }
        }
        Ok(rs)
    }
}

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

/// float8 -0 and 0 are equal to PostgreSQL (one may stand for the other in
/// min/max, DISTINCT, and among sort ties), so "-0" compares as "0". No other
/// generated value renders as "-0".
fn norm(c: &Option<String>) -> Option<&str> {
    match c.as_deref() {
        Some("-0") => Some("0"),
        x => x,
    }
}

/// Parses a float as PostgreSQL renders it (and as [`render_float`] does);
/// rejects Rust-only spellings such as "inf".
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

fn cell_eq(kind: Kind, a: &Option<String>, b: &Option<String>) -> bool {
    let (a, b) = (norm(a), norm(b));
    if a == b {
        return true;
    }
    match (kind, a.and_then(parse_float), b.and_then(parse_float)) {
        (Kind::Float, Some(x), Some(y)) => {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => false,
    }
}

fn row_eq(q: &Q, a: &[Option<String>], b: &[Option<String>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| cell_eq(q.kind(i), x, y))
}

/// Canonical order for multiset comparison: exact cells first (as text),
/// then float-aggregate cells numerically, so near-equal floats line up.
fn multiset_cmp(q: &Q, a: &[Option<String>], b: &[Option<String>]) -> Ordering {
    let n = a.len().min(b.len());
    let exact = (0..n)
        .filter(|&i| q.kind(i) == Kind::Exact)
        .map(|i| norm(&a[i]).cmp(&norm(&b[i])));
    let float = (0..n).filter(|&i| q.kind(i) == Kind::Float).map(|i| {
        let x = a[i].as_deref().and_then(parse_float);
        let y = b[i].as_deref().and_then(parse_float);
        match (x, y) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a[i].cmp(&b[i]),
        }
    });
    exact
        .chain(float)
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

fn fmt_row(r: &[Option<String>]) -> String {
    let cells: Vec<String> = r
        .iter()
        .map(|c| {
            c.as_deref()
                .map_or("NULL".to_string(), |s| format!("{s:?}"))
        })
        .collect();
    format!("({})", cells.join(", "))
}

fn fmt_rows(rs: &Rs, around: usize) -> String {
    let from = around.saturating_sub(2);
    let mut s = format!("{} row(s), columns [{}]", rs.rows.len(), rs.cols.join(", "));
    for (i, r) in rs.rows.iter().enumerate().skip(from).take(6) {
        write!(s, "\n      #{i}: {}", fmt_row(r)).unwrap();
    }
    if rs.rows.len() > from + 6 {
        s += "\n      ...";
    }
    s
}

/// Compares the router's result to the reference's per `q.order`; the error
/// says what differs.
fn compare(q: &Q, exp: &Rs, got: &Rs) -> Result<(), String> {
    if exp.cols != got.cols {
        return Err(format!(
            "columns differ: [{}] vs [{}]",
            exp.cols.join(", "),
            got.cols.join(", ")
        ));
    }
    if exp.rows.len() != got.rows.len() {
        return Err(format!(
            "row counts differ: {} vs {}",
            exp.rows.len(),
            got.rows.len()
        ));
    }
    match &q.order {
        Order::Total => {
            if let Some(i) = (0..exp.rows.len()).find(|&i| !row_eq(q, &exp.rows[i], &got.rows[i])) {
                return Err(format!("row #{i} differs (ordered comparison)"));
            }
            return Ok(());
        }
        Order::Keys(idx) => {
            let keys = |r: &Vec<Option<String>>| -> Vec<Option<String>> {
                idx.iter()
                    .map(|&i| r.get(i).and_then(|c| norm(c).map(str::to_string)))
                    .collect()
            };
            if let Some(i) = (0..exp.rows.len()).find(|&i| keys(&exp.rows[i]) != keys(&got.rows[i]))
            {
                return Err(format!("sort keys (columns {idx:?}) differ at row #{i}"));
            }
        }
        Order::None => {}
    }
    let mut a: Vec<&Vec<Option<String>>> = exp.rows.iter().collect();
    let mut b: Vec<&Vec<Option<String>>> = got.rows.iter().collect();
    a.sort_by(|x, y| multiset_cmp(q, x, y));
    b.sort_by(|x, y| multiset_cmp(q, x, y));
    if let Some(i) = (0..a.len()).find(|&i| !row_eq(q, a[i], b[i])) {
        return Err(format!(
            "rows differ as multisets: first difference in canonical order: {} vs {}",
            fmt_row(a[i]),
            fmt_row(b[i])
        ));
    }
    Ok(())
}

fn fmt_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                write!(s, " (detail: {d})").unwrap();
            }
            s
        }
        None => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    total: usize,
    ok: usize,
    refused: usize,
    mismatched: usize,
    skipped: usize,
}

/// DSN of database `db` on instance `inst`.
fn db_dsn(inst: &pg_router::cluster::PgInstance, db: &str) -> String {
    format!(
        "host={} port={} user={} dbname={db}",
        inst.host, inst.port, inst.user
    )
}

/// A session on the system under test: the router, or with
/// `PGR_DIFF_SELF_CHECK=1` the plain database `selfcheck` on the first shard
/// instance (see the test).
async fn target_session(dev: &pg_router::dev::DevCluster, self_check: bool) -> Client {
    let c = if self_check {
        common::connect_dsn(&db_dsn(&dev.cluster.shards[0], "selfcheck")).await
    } else {
        common::connect(dev).await
    };
    c.batch_execute(SESSION_SETTINGS)
        .await
        .expect("session settings on the target");
    c
}

/// Multi-row INSERT statements for `rows` (VALUES tuples), `per` rows each,
/// optionally in reverse row order.
fn insert_statements(head: &str, rows: &[String], per: usize, reverse: bool) -> Vec<String> {
    let mut rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    if reverse {
        rows.reverse();
    }
    rows.chunks(per)
        .map(|c| format!("{head}{}", c.join(", ")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scatter_gather_matches_reference() {
    let seed: u64 = env_or("PGR_DIFF_SEED", DEFAULT_SEED);
    let nqueries: usize = env_or("PGR_DIFF_QUERIES", DEFAULT_QUERIES);
    let allow_refused = std::env::var("PGR_DIFF_ALLOW_REFUSED").is_ok_and(|v| v == "1");
    // Self-check of the test itself: the statements go to a second plain
    // database loaded in reverse row order instead of the router, so ties
    // come out in another order and floats are summed in another order. With
    // a correct comparison every statement must come out `ok` there; a
    // mismatch means an ORDER BY assumed total is not, or a tolerance is off.
    let self_check = std::env::var("PGR_DIFF_SELF_CHECK").is_ok_and(|v| v == "1");
    let t0 = Instant::now();

    let dev = common::start(SHARDS, POOL_SIZE).await;

    // Reference: a plain database on the catalog instance (same binaries,
    // same initdb options: C collation, UTF8).
    let cat = &dev.cluster.catalog;
    let admin = common::connect_direct(cat).await;
    admin
        .batch_execute("CREATE DATABASE reference")
        .await
        .expect("create reference database");
    let reference = common::connect_dsn(&db_dsn(cat, "reference")).await;
    reference.batch_execute(SESSION_SETTINGS).await.unwrap();
    if self_check {
        let shard0 = common::connect_direct(&dev.cluster.shards[0]).await;
        shard0
            .batch_execute("CREATE DATABASE selfcheck")
            .await
            .expect("create selfcheck database");
    }
    let mut router = target_session(&dev, self_check).await;

    // Schema: DDL through the router runs on every shard; then declared.
    for ddl in [ITEMS_DDL, EVENTS_DDL, LOGS_DDL, KINDS_DDL] {
        router
            .batch_execute(ddl)
            .await
            .expect("DDL through the router");
        reference
            .batch_execute(ddl)
            .await
            .expect("DDL on the reference");
    }
    common::add_table(&dev, "items", "id", "int").await;
    common::add_table(&dev, "events", "k", "int").await;
    common::add_table(&dev, "logs", "id", "int").await;
    common::meta(&dev, &["add-reference-table", "--table", "kinds"]);
    let t0k = Instant::now();
    while !dev.router.state.routing().catalog.is_reference("kinds") {
        assert!(
            t0k.elapsed() < Duration::from_secs(5),
            "kinds not picked up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    router
        .batch_execute(KINDS_ROWS)
        .await
        .expect("reference rows");
    reference.batch_execute(KINDS_ROWS).await.unwrap();

    // Data: multi-row INSERTs of the same rows to both (the router splits
    // them by shard); the self-check target gets them in reverse order.
    let mut rng = Rng::with_seed(seed);
    let ids: Vec<i64> = (0..ITEM_ROWS).map(|i| i * 3 + rng.i64(1..4)).collect();
    let items: Vec<String> = ids
        .iter()
        .map(|&id| item_row(&mut rng, id, id == ids[100]))
        .collect();
    let events: Vec<String> = ids
        .iter()
        .step_by(4)
        .flat_map(|&k| event_rows(&mut rng, k))
        .collect();
    let ev_head = "INSERT INTO events (k, id, v) VALUES ";
    let mut ref_load = insert_statements(ITEMS_INSERT, &items, 250, false);
    ref_load.extend(insert_statements(ev_head, &events, 400, false));
    let mut target_load = insert_statements(ITEMS_INSERT, &items, 250, self_check);
    target_load.extend(insert_statements(ev_head, &events, 400, self_check));
    // Every other items batch without a column list (the table's order).
    for load in [&mut ref_load, &mut target_load] {
        for sql in load.iter_mut().step_by(2) {
            if let Some(rest) = sql.strip_prefix(ITEMS_INSERT) {
                *sql = format!("INSERT INTO items VALUES {rest}");
            }
        }
    }
    for sql in &ref_load {
        reference
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("load reference: {}\n{sql}", fmt_err(&e)));
    }
    for sql in &target_load {
        router
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("load through the router: {}", fmt_err(&e)));
    }
    // logs: generated keys, in the same order on both sides (so the same
    // ids); batches alternate between literals and parameters.
    let log_batches: Vec<(String, Vec<Param>)> = (0..LOG_ROWS / 50)
        .map(|b| {
            if b % 2 == 0 {
                let rows: Vec<String> = (0..50).map(|_| log_row(&mut rng)).collect();
                (
                    format!("INSERT INTO logs (item, v) VALUES {}", rows.join(", ")),
                    Vec::new(),
                )
            } else {
                let rows: Vec<String> = (0..50)
                    .map(|r| format!("(${}, ${})", 2 * r + 1, 2 * r + 2))
                    .collect();
                let params = (0..50)
                    .flat_map(|_| {
                        [
                            Param::I64(rng.i64(1..20_000)),
                            Param::I32(rng.i32(-50..500)),
                        ]
                    })
                    .collect();
                (
                    format!("INSERT INTO logs (item, v) VALUES {}", rows.join(", ")),
                    params,
                )
            }
        })
        .collect();
    for (c, side) in [(&reference, "reference"), (&router, "the router")] {
        for (sql, params) in &log_batches {
            let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
            let r = if p.is_empty() {
                c.batch_execute(sql).await.map(|_| 0)
            } else {
                c.execute(sql.as_str(), &p).await
            };
            r.unwrap_or_else(|e| panic!("load logs into {side}: {}", fmt_err(&e)));
        }
    }
    // Load check (simple protocol, the most basic path).
    for t in ["items", "events", "logs"] {
        let q = Q {
            form: "load check",
            sql: format!(
                "SELECT count(*), {} FROM {t}",
                if t == "logs" {
                    "sum(id), sum(id * item)"
                } else {
                    "1"
                }
            ),
            params: Vec::new(),
            extended: false,
            order: Order::None,
            kinds: Vec::new(),
        };
        let a = exec(&reference, &q)
            .await
            .unwrap_or_else(|e| panic!("{}: {}", q.sql, fmt_err(&e)));
        let b = exec(&router, &q)
            .await
            .unwrap_or_else(|e| panic!("{} through the router: {}", q.sql, fmt_err(&e)));
        assert_eq!(
            a.rows, b.rows,
            "{t}: the reference and the router disagree on the number of rows loaded"
        );
    }
    println!(
        "scatter_diff: seed {seed}, {} items + {} events loaded in {:.1?}{}",
        items.len(),
        events.len(),
        t0.elapsed(),
        if self_check {
            " (SELF-CHECK: target is a plain database, not the router)"
        } else {
            ""
        }
    );

    let mut live_ids = ids.clone();
    let mut next_id = 100_000i64;
    let mut tally = Tally::default();
    // Per form and protocol: ok, refused, mismatched, skipped.
    let mut forms: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut refusals: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut mismatches: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let (mut writes, mut write_mismatches) = (0usize, 0usize);
    let t_loop = Instant::now();

    for qno in 0..nqueries {
        // Writes in between, applied to both sides.
        if qno % WRITE_EVERY == WRITE_EVERY - 1 {
            for _ in 0..rng.usize(1..4) {
                let w = gen_write(&mut rng, &live_ids, &mut next_id);
                let proto = if w.extended { "extended" } else { "simple" };
                // The reference applies the write in a transaction that is
                // rolled back if the router fails it, so one failed write
                // does not make every later result differ.
                reference.batch_execute("BEGIN").await.unwrap();
                let exp = match exec_write(&reference, &w).await {
                    Ok(n) => n,
                    Err(e) => {
                        reference.batch_execute("ROLLBACK").await.unwrap();
                        skipped.push(format!("write [{proto}] {}\n    {}", w.sql, fmt_err(&e)));
                        continue;
                    }
                };
                writes += 1;
                let got = tokio::time::timeout(QUERY_TIMEOUT, exec_write(&router, &w)).await;
                let router_failed = matches!(got, Ok(Err(_)));
                let problem = match got {
                    Ok(Ok(n)) if n == exp => None,
                    // Applied on both sides, but the databases may now differ.
                    Ok(Ok((n, _))) if n != exp.0 => {
                        Some(format!("affected {n} rows, reference {}", exp.0))
                    }
                    Ok(Ok((_, rows))) => {
                        Some(format!("RETURNING rows {rows:?}, reference {:?}", exp.1))
                    }
                    Ok(Err(e)) => Some(fmt_err(&e)),
                    Err(_) => {
                        router = target_session(&dev, self_check).await;
                        Some("no answer (the write may or may not have been applied)".into())
                    }
                };
                reference
                    .batch_execute(if router_failed { "ROLLBACK" } else { "COMMIT" })
                    .await
                    .unwrap();
                if !router_failed {
                    live_ids.extend(&w.new_ids);
                    if let Some(d) = w.deleted {
                        live_ids.retain(|&x| x != d);
                    }
                }
                if let Some(p) = problem {
                    write_mismatches += 1;
                    mismatches.push(format!(
                        "WRITE [{proto}] {} -- params {:?}\n    {p}",
                        w.sql, w.params
                    ));
                }
                if router.is_closed() {
                    router = target_session(&dev, self_check).await;
                }
            }
        }

        let extended = chance(&mut rng, 0.25);
        let q = Gen {
            rng: &mut rng,
            extended,
            params: Vec::new(),
            ids: &live_ids,
        }
        .query();
        tally.total += 1;
        let f = forms
            .entry(format!(
                "{} [{}]",
                q.form,
                if q.extended { "ext" } else { "simple" }
            ))
            .or_default();
        let exp = match exec(&reference, &q).await {
            Ok(rs) => rs,
            Err(e) => {
                tally.skipped += 1;
                f[3] += 1;
                skipped.push(format!("{}\n    {}", q.describe(), fmt_err(&e)));
                continue;
            }
        };
        let got = tokio::time::timeout(QUERY_TIMEOUT, exec(&router, &q)).await;
        let problem = match got {
            Ok(Ok(got)) => compare(&q, &exp, &got).err().map(|why| {
                // Show the rows around the first difference.
                let at = why
                    .split("row #")
                    .nth(1)
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                format!(
                    "{why}\n    expected {}\n    got      {}",
                    fmt_rows(&exp, at),
                    fmt_rows(&got, at)
                )
            }),
            Ok(Err(e))
                if e.as_db_error()
                    .is_some_and(|d| d.code() == &SqlState::FEATURE_NOT_SUPPORTED) =>
            {
                tally.refused += 1;
                f[1] += 1;
                let msg = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_default();
                refusals.entry(msg).or_insert((0, q.describe())).0 += 1;
                if router.is_closed() {
                    router = target_session(&dev, self_check).await;
                }
                continue;
            }
            Ok(Err(e)) => Some(format!("router error {}", fmt_err(&e))),
            Err(_) => {
                router = target_session(&dev, self_check).await; // the old session may still be busy
                Some(format!("no answer within {QUERY_TIMEOUT:?}"))
            }
        };
        match problem {
            None => {
                tally.ok += 1;
                f[0] += 1;
            }
            Some(p) => {
                tally.mismatched += 1;
                f[2] += 1;
                mismatches.push(format!("{}\n    {p}", q.describe()));
            }
        }
        if router.is_closed() {
            router = target_session(&dev, self_check).await;
        }
    }
    let elapsed = t_loop.elapsed();

    // ---- report ----
    if !skipped.is_empty() {
        println!(
            "\n=== skipped: the reference rejected {} statement(s) (generator bugs) ===",
            skipped.len()
        );
        for s in skipped.iter().take(SHOW_SKIPPED) {
            println!("  {s}");
        }
    }
    if !refusals.is_empty() {
        println!(
            "\n=== refused (0A000): {} distinct message(s) ===",
            refusals.len()
        );
        for (msg, (n, example)) in &refusals {
            println!("  {n:5} × {msg}\n          e.g. {example}");
        }
    }
    if !mismatches.is_empty() {
        let show = env_or("PGR_DIFF_SHOW", SHOW_MISMATCHES);
        println!(
            "\n=== mismatches: {} (showing {}) ===",
            mismatches.len(),
            mismatches.len().min(show)
        );
        for m in mismatches.iter().take(show) {
            println!("  {m}\n");
        }
    }
    println!("\n=== per form: ok / refused / mismatched / skipped ===");
    for (form, [ok, re, mi, sk]) in &forms {
        println!("  {form:33} {ok:5} {re:5} {mi:5} {sk:5}");
    }
    println!(
        "\nscatter_diff summary: total={} ok={} refused={} mismatched={} skipped={} writes={} write_mismatches={} \
         seed={seed}{} ({:.1?} for the queries, {:.1?} in all)",
        tally.total,
        tally.ok,
        tally.refused,
        tally.mismatched,
        tally.skipped,
        writes,
        write_mismatches,
        if self_check { " SELF-CHECK" } else { "" },
        elapsed,
        t0.elapsed()
    );

    dev.stop().await;
    assert_eq!(
        tally.mismatched + write_mismatches,
        0,
        "router results differ from the reference (see above)"
    );
    if !allow_refused {
        assert_eq!(
            tally.refused, 0,
            "the router refused supported forms (set PGR_DIFF_ALLOW_REFUSED=1 to tolerate)"
        );
    }
    assert!(
        tally.skipped * 20 <= tally.total.max(1),
        "too many generator errors: {}",
        tally.skipped
    );
}
