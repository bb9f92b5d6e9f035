//! Checkpoint images of an owner's verbs objects: a versioned, serialisable
//! record of all transport state, and its encoding.

use serde::{Deserialize, Serialize};

use crate::error::VerbsError;
use crate::types::OwnerId;

/// Format version written into every image; decoding rejects others.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Every verbs object of one owner, with all the transport state of its QPs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerSnapshot {
    pub version: u32,
    pub owner: OwnerId,
}

impl OwnerSnapshot {
    /// Encodes the image (JSON: readable by operators, diffable in tests).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot types always serialise")
    }

    /// Decodes and validates an image; never panics on bad input.
    pub fn decode(bytes: &[u8]) -> Result<OwnerSnapshot, VerbsError> {
        let snap: OwnerSnapshot =
            serde_json::from_slice(bytes).map_err(|e| VerbsError::BadSnapshot(e.to_string()))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(VerbsError::BadSnapshot(format!(
                "version {} (this build reads {})",
                snap.version, SNAPSHOT_VERSION
            )));
        }
        Ok(snap)
    }
}
