//! How many WebSocket connections each user holds open on this instance, so that one user
//! (a runaway tab loop, a leaked client) cannot take the sockets everyone else needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open connections per user.
#[derive(Debug, Default)]
pub struct UserConnections {
    counts: Mutex<HashMap<String, u32>>,
}

impl UserConnections {
    /// Counts one more connection of `user`, unless it already holds `max`.
    pub fn acquire(self: &Arc<Self>, user: &str, max: u32) -> Option<ConnectionSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(user.to_owned()).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            owner: self.clone(),
            user: user.to_owned(),
        })
    }
}

/// One counted connection; dropping it counts it out.
#[derive(Debug)]
pub struct ConnectionSlot {
    owner: Arc<UserConnections>,
    user: String,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}
