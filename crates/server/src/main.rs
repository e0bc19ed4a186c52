//! The `berth` command: serve, verify a configuration, print the version.

use berth_server::config::{self, Settings};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "An OCI registry that reads zot's config.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without a configuration: 127.0.0.1:5000, ./data.
    Serve {
        /// A zot-format configuration file (config.json).
        config: Option<PathBuf>,
    },
    /// Check a configuration file and report what it would do.
    Verify { config: PathBuf },
}

fn settings_from(path: &std::path::Path) -> Result<Settings, config::ConfigError> {
    let parsed = config::load(path)?;
    Settings::resolve(&parsed, &path.display().to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { config } => match settings_from(&config) {
            Ok(s) => {
                println!("{}: valid", config.display());
                for f in &s.inactive {
                    println!("  not active in this build: {f}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => {
            let settings = match config {
                None => Settings::embedded(),
                Some(path) => match settings_from(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("invalid configuration: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            if let Err(e) = berth_server::logging::init(&settings) {
                eprintln!("cannot open log output: {e}");
                return ExitCode::from(2);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(berth_server::serve::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "berth stopped");
                    eprintln!("berth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
