//! `base::`: the kernel behaviour the project relies on (SO_PEEK_OFF,
//! corking), on any kernel.

use crate::ktap::Test;

/// All tests of the suite.
pub fn tests() -> Vec<Test> {
    Vec::new()
}
