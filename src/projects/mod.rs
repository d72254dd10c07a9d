//! Projects and their members: who may see and do what.

pub mod access;
pub mod graphql;
pub mod loader;
pub mod service;
