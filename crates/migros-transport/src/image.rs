//! The checkpoint image of an owner's objects, as its own versioned types.
//!
//! An image crosses machines and migros versions (a CRIU image directory,
//! a file kept with `--keep-image`), so its format is not whatever the live
//! engine structs happen to serialise to. [`v2`] defines it field by field;
//! [`crate::OwnerSnapshot::to_image`] and
//! [`crate::OwnerSnapshot::from_image`] convert explicitly between it and
//! the live objects, so an engine change cannot change the format without
//! a conversion to change as well (and the golden image in the tests to
//! stop matching).
//!
//! Versions: 1 (before this module) serialised the live structs; it is
//! refused with a message naming both versions. A format change gets a new
//! module (`v3`) and version number; whether an older one is migrated or
//! refused is decided there.
//!
//! The image carries the owner's verbs objects with these migros-proto
//! types as they are (they are the client protocol too, versioned by
//! `PROTOCOL_VERSION`): `QpInit`, `QpAttr`, `QpCounters`, `SendWr`,
//! `RecvWr`, `WorkCompletion`, `WcStatus`. Everything of the engines
//! themselves (send queue progress, the window, the responder's message in
//! progress, its READ/atomic resources and queued responses, timers) has
//! an image type here.

pub mod v2;

mod convert;

use serde::Deserialize;

use crate::error::VerbsError;

/// The image version this build writes and reads.
pub const VERSION: u32 = v2::VERSION;

/// Just the version of an image, read before the rest so that an image of
/// another version is refused by name, not by the first field it lacks.
#[derive(Deserialize)]
struct Header {
    version: u32,
}

/// Decodes an image of this build's version (JSON).
pub(crate) fn decode(bytes: &[u8]) -> Result<v2::OwnerImage, VerbsError> {
    let bad = |e: serde_json::Error| VerbsError::BadSnapshot(e.to_string());
    let header: Header = serde_json::from_slice(bytes).map_err(bad)?;
    check_version(header.version)?;
    serde_json::from_slice(bytes).map_err(bad)
}

/// Refuses an image of any version but [`VERSION`].
pub(crate) fn check_version(version: u32) -> Result<(), VerbsError> {
    if version == VERSION {
        return Ok(());
    }
    Err(VerbsError::BadSnapshot(format!(
        "image version {version}: this migros reads version {VERSION} only \
         (checkpoint and restore with the same migros version)"
    )))
}

#[cfg(test)]
pub(crate) mod tests;
