//! Where a job comes from: the `X-Request-Id` of the request that submitted it (or of the job
//! that did, inherited) and the trace context of the span that submitted it (W3C
//! `traceparent`, then `tracestate` after a line break), so its run continues that trace and
//! its log lines tie back to the request.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for column in [
            string_len_null("request_id", 128),
            string_len_null("trace_context", 600),
        ] {
            manager
                .alter_table(Table::alter().table("jobs").add_column(column).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["trace_context", "request_id"] {
            manager
                .alter_table(Table::alter().table("jobs").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
