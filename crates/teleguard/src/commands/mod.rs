//! One module per subcommand.

pub mod bench;
pub mod certs;
pub mod clickhouse;
pub mod eval;
pub mod hunt;
pub mod input;
pub mod mqtt_publish;
pub mod replay;
pub mod run;
pub mod schema;
pub mod simulate;
pub mod token;
pub mod train;
