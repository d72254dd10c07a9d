//! Tasks: the cards on a board, their patches, and the three-way merge of stale edits.

pub mod conflicts;
pub mod cursor;
pub mod graphql;
pub mod input;
pub mod merge;
pub mod patch;
#[cfg(test)]
mod proptests;
pub mod service;
pub mod subscription;
pub mod write;
