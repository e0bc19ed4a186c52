//! Structured logs: JSON to a file or a pipe, text on a terminal.

use crate::config::Settings;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the level.
pub fn init(settings: &Settings) -> std::io::Result<()> {
    let level = match settings.log_level.as_str() {
        "warning" => "warn",
        "fatal" | "panic" => "error",
        l => l,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &settings.log_output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .json()
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None if std::io::stdout().is_terminal() => builder.init(),
        None => builder.json().init(),
    }
    Ok(())
}
