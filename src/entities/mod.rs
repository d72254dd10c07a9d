//! SeaORM entities, one per table, mirroring `migration/`. Behaviour lives in the domain
//! slices; these files only describe rows.

pub mod api_tokens;
pub mod events;
pub mod mutation_receipts;
pub mod project_members;
pub mod projects;
pub mod tasks;
pub mod users;
pub mod webhook_deliveries;
pub mod webhook_redeliveries;
pub mod webhooks;
