//! The client's prepared statements: Parse registers one under a
//! router-wide backend name (`pgr_<hash of query and parameter types>`), so
//! it can be (re-)prepared on whichever backend connection serves a Bind;
//! a statement planned with an older catalog snapshot is planned again.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend as fe;

use crate::exec::statement::{BackendName, ClientStmt};
use crate::plan::{statement_id, Merge, Plan, SqlPiece};
use crate::protocol::error::codes;
use crate::protocol::frontend::Parse;
use crate::protocol::PgError;
use crate::state::Routing;

use super::Session;

/// Rebuilds a Bind or Describe/Close-statement frame with another statement
/// name. `prefix` is the bytes before the name inside the body.
pub(super) fn rename_frame(tag: u8, prefix: &[u8], name: &str, rest: &[u8]) -> Bytes {
    let len = 4 + prefix.len() + name.len() + 1 + rest.len();
    let mut b = BytesMut::with_capacity(len + 1);
    b.put_u8(tag);
    b.put_i32(len as i32);
    b.extend_from_slice(prefix);
    b.extend_from_slice(name.as_bytes());
    b.put_u8(0);
    b.extend_from_slice(rest);
    b.freeze()
}

impl Session {
    pub(super) fn register_statement(
        &mut self,
        routing: &Routing,
        p: &Parse<'_>,
    ) -> Result<Arc<ClientStmt>, PgError> {
        if let Some(old) = self.statements.get(p.name) {
            if !p.name.is_empty() {
                return Err(PgError::new(
                    codes::DUPLICATE_PREPARED_STATEMENT,
                    format!("prepared statement \"{}\" already exists", p.name),
                ));
            }
            if old.query == p.query && old.param_types == p.param_types && old.current(routing) {
                return Ok(old.clone());
            }
        }
        let stmt = Arc::new(self.new_statement(routing, p.query, &p.param_types));
        self.keep_statement(p.name.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Keeps `stmt` as the client's statement `name` (replacing one of
    /// that name).
    pub(super) fn keep_statement(&mut self, name: String, stmt: Arc<ClientStmt>) {
        if matches!(*stmt.plan, Plan::Copy(_)) {
            self.copy_statements = true;
        }
        self.statements.insert(name, stmt);
    }

    fn new_statement(&self, routing: &Routing, query: &str, types: &[u32]) -> ClientStmt {
        let plan = routing.planner.plan_extended(query, routing);
        statement_with_plan(routing, query, types, plan)
    }

    /// [`Session::new_statement`] of a text made once (planned without the
    /// plan cache): a statement with the values of one Bind written in.
    pub(super) fn new_statement_once(
        &self,
        routing: &Routing,
        query: &str,
        types: &[u32],
    ) -> ClientStmt {
        let plan = Arc::new(routing.planner.plan_extended_once(query, routing));
        statement_with_plan(routing, query, types, plan)
    }

    pub(super) fn lookup_statement(
        &mut self,
        routing: &Routing,
        name: &str,
    ) -> Result<Arc<ClientStmt>, PgError> {
        let Some(s) = self.statements.get(name) else {
            return Err(PgError::new(
                codes::INVALID_SQL_STATEMENT_NAME,
                if name.is_empty() {
                    "unnamed prepared statement does not exist".to_string()
                } else {
                    format!("prepared statement \"{name}\" does not exist")
                },
            ));
        };
        if s.current(routing) {
            return Ok(s.clone());
        }
        // The catalog or a table's columns changed since Parse: plan again.
        let fresh = Arc::new(self.new_statement(routing, &s.query.clone(), &s.param_types.clone()));
        self.keep_statement(name.to_string(), fresh.clone());
        Ok(fresh)
    }
}

/// A statement of `query` (parameter types `types`) planned as `plan`.
fn statement_with_plan(
    routing: &Routing,
    query: &str,
    types: &[u32],
    plan: Arc<Plan>,
) -> ClientStmt {
    // A gather prepares its rewritten statement on the shards.
    let shard_text: Option<String> = match &*plan {
        Plan::Scatter {
            merge: Merge::Gather(g),
            ..
        } => Some(
            g.sql
                .iter()
                .map(|p| match p {
                    SqlPiece::Text(t) => t.as_str(),
                    _ => "",
                })
                .collect(),
        ),
        _ => None,
    };
    let text = shard_text.as_deref().unwrap_or(query);
    // A shards' statement using some of the parameters has their types.
    let shard_types: Vec<u32> = match &*plan {
        Plan::Scatter {
            merge: Merge::Gather(g),
            ..
        } => match &g.shard_params {
            Some(idx) => idx
                .iter()
                .map(|&i| types.get(i).copied().unwrap_or(0))
                .collect(),
            None => types.to_vec(),
        },
        _ => types.to_vec(),
    };
    let id = statement_id(text, &shard_types);
    let backend_name = BackendName::new(id).as_str().to_string();
    let mut pf = BytesMut::new();
    let _ = fe::parse(&backend_name, text, shard_types.iter().copied(), &mut pf);
    ClientStmt {
        id,
        query: query.to_string(),
        param_types: types.to_vec(),
        plan,
        version: routing.version,
        schema_epoch: routing.schema_epoch(),
        parse_frame: pf.freeze(),
        backend_name,
        shard_param_types: OnceLock::new(),
    }
}
