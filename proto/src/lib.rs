//! Checkpoint image schema.
