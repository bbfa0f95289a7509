//! Keyspace rules at `CREATE TABLE` (`docs/generated-keys.md`): a table the
//! catalog does not know, created through the router with a column that a
//! rule names, is declared sharded by that column before the shards create
//! it, and this router waits until its routing snapshot has the table, so
//! the next statement (`INSERT` right after `CREATE TABLE`) routes by key.

use std::time::{Duration, Instant};

use crate::plan::{created_table, CreatedTable};
use crate::protocol::error::codes;
use crate::protocol::PgError;
use crate::state::Routing;

use super::context::ExecCtx;

/// Longest wait for this router's catalog watcher to load a declaration.
const LOAD_WAIT: Duration = Duration::from_secs(5);

/// How often the routing snapshot is checked while waiting.
const POLL: Duration = Duration::from_millis(5);

impl ExecCtx {
    /// The table `sql` creates if a keyspace rule may shard it (the
    /// catalog has rules and `sql` is a CREATE TABLE of an undeclared
    /// table); None otherwise, without parsing when there are no rules.
    pub fn rule_candidate(routing: &Routing, sql: &str) -> Option<CreatedTable> {
        if routing.catalog.table_rules.is_empty() {
            return None;
        }
        created_table(sql, routing)
    }

    /// Before `created`'s CREATE TABLE runs on every shard
    /// ([`ExecCtx::rule_candidate`]): if a keyspace rule shards it,
    /// declares it (see the module docs). Returns false after sending an
    /// error (nothing was created): 08006 when the catalog cannot be
    /// reached or refuses, or this router did not load the declaration
    /// within 5 s.
    pub async fn declare_by_rule(&mut self, routing: &Routing, created: &CreatedTable) -> bool {
        let rules = &routing.catalog.table_rules;
        // The first column (in table order) a rule names.
        let Some((column, Some(key_type))) = created
            .columns
            .iter()
            .find(|(c, _)| rules.iter().any(|(r, _)| r == c))
        else {
            return true;
        };
        let table = created.table.as_str();
        match self
            .state
            .sequences
            .declare_by_rule(table, column, *key_type)
            .await
        {
            Ok(true) => {}
            // The rule was dropped meanwhile: an ordinary CREATE TABLE.
            Ok(false) => return true,
            Err(e) => {
                self.send_error(&e);
                return false;
            }
        }
        let start = Instant::now();
        while self.state.routing().catalog.table(table).is_none() {
            if start.elapsed() > LOAD_WAIT {
                self.send_error(
                    &PgError::new(
                        codes::CONNECTION_FAILURE,
                        format!(
                            "table \"{table}\" was declared in the catalog by the keyspace rule of column \"{column}\", but this router did not load the catalog within 5 s"
                        ),
                    )
                    .with_hint("nothing was created; retry once the router has reloaded the catalog"),
                );
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    }
}
