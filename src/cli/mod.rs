//! One module per subcommand; each has an `Args` (clap) and a `run`.

pub mod bench;
pub mod config_cmd;
pub mod devices;
pub mod eval;
pub mod eval_dialog;
pub mod eval_dual;
pub mod eval_recap;
pub mod eval_transport;
pub mod eval_turn;
pub mod eval_verifier;
pub mod listen;
pub mod listen_aec;
pub mod models;
pub mod say;
pub mod serve;
pub mod transcribe;
