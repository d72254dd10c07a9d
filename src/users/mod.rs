//! Users as clients see them: the `User` type, `me`, and batched loading by id.

pub mod graphql;
pub mod loader;

pub use graphql::User;
pub use loader::{UserLoader, prefetch_users, resolve_user};
