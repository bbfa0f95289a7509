//! Explicit transactions on a shared `&Client` (tokio-postgres' `Transaction`
//! needs `&mut Client`, which the catalog API does not take).
//!
//! Usage: `begin(c, mode).await?; let r = body(c).await; finish(c, r).await`.
//! If the caller's future is dropped between the two, the session is left in
//! an open transaction; catalog clients are short-lived, so this is accepted.

use tokio_postgres::Client;

use super::error::{CatalogError, DbContext};

/// `BEGIN` statement for a read-write transaction.
pub const READ_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// `BEGIN` statement for a consistent read-only snapshot.
pub const SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Starts a transaction with `begin_sql` (one of the constants above).
///
/// Errors: [`CatalogError::Db`] if the server refuses.
pub async fn begin(client: &Client, begin_sql: &str) -> Result<(), CatalogError> {
    client
        .batch_execute(begin_sql)
        .await
        .ctx("starting a catalog transaction")
}

/// Commits if `result` is `Ok`, rolls back otherwise, and returns `result`
/// (or the commit error).
///
/// Errors: the body's error, or [`CatalogError::Db`] if `COMMIT` fails.
pub async fn finish<T>(
    client: &Client,
    result: Result<T, CatalogError>,
) -> Result<T, CatalogError> {
    match result {
        Ok(v) => {
            client
                .batch_execute("COMMIT")
                .await
                .ctx("committing the catalog transaction")?;
            Ok(v)
        }
        Err(e) => {
            if let Err(rb) = client.batch_execute("ROLLBACK").await {
                tracing::debug!(error = %rb, "rollback after a failed catalog transaction failed");
            }
            Err(e)
        }
    }
}
