//! One module per subcommand.

pub mod bench;
pub mod eval;
pub mod replay;
pub mod run;
pub mod schema;
pub mod simulate;
