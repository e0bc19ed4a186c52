//! A turn among replicas: a PostgreSQL advisory lock held on a pooled
//! connection (see `Backend::exclusive`).

use super::*;

/// An advisory lock held on a pooled connection.
pub(super) struct PgTurn {
    pub(super) client: Option<deadpool_postgres::Object>,
    pub(super) key: i64,
}

impl Drop for PgTurn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime left: closing the connection releases the lock.
            drop(deadpool_postgres::Object::take(client));
            return;
        };
        let key = self.key;
        rt.spawn(async move {
            match one(&client, "SELECT pg_advisory_unlock($1)", &[&key]).await {
                Ok(r) if r.get::<_, bool>(0) => {} // back to the pool
                // Not released (or not knowable): the connection closes,
                // which releases every lock it held.
                _ => drop(deadpool_postgres::Object::take(client)),
            }
        });
    }
}
