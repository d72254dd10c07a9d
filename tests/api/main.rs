//! TaskNest's integration tests: one binary, each test against a real server on an
//! ephemeral port with a fresh database (SQLite by default, PostgreSQL when
//! `TEST_DATABASE_URL=postgres://…` is set).

mod helpers;

mod api_tokens;
mod architecture;
mod auth;
mod cli;
mod clients;
mod cluster;
mod conflicts;
mod efficiency;
mod events;
mod faults;
mod generated;
mod hostile;
mod http;
mod identity;
mod jwks;
mod members;
mod multi_instance;
mod multipart;
mod observability;
mod pagination;
mod permissions;
mod persisted_queries;
mod playground;
mod presence;
mod presence_repair;
mod projects;
mod rate_limits;
mod redis_fallback;
mod retries;
mod schema;
mod spec;
mod sse;
mod subscriptions;
mod tasks;
mod validation;
mod webhooks;
mod ws_protocol;
