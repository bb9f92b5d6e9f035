//! Virtual-time network of migros devices (test support).
