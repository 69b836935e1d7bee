//! One module per subcommand; each has an `Args` (clap) and a `run`.

pub mod config_cmd;
pub mod devices;
pub mod listen;
pub mod models;
pub mod say;
pub mod serve;
pub mod transcribe;
