use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub payload: Json,
    /// One of [`crate::jobs::JobStatus`]'s names.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When the job may run next (now for new jobs, later for retries).
    pub run_at: DateTimeUtc,
    pub result: Option<Json>,
    pub error: Option<String>,
    pub owner_id: Option<Uuid>,
    #[sea_orm(unique)]
    pub dedupe_key: Option<String>,
    /// The worker running it, while STARTED.
    pub locked_by: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// Set once the broker confirmed the message; cleared when a retry needs publishing again.
    pub published_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
