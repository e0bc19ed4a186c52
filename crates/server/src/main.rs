//! The `berth` command: serve, verify a configuration, print the version.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

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
    /// Re-hash all stored content; quarantine and report what is corrupt.
    /// Exits 3 when corruption was found.
    Scrub { config: PathBuf },
    /// One garbage collection pass, with progress and a summary.
    Gc {
        /// Report what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        config: PathBuf,
    },
    /// Copy this registry's whole store into another store (the local
    /// filesystem into S3 + PostgreSQL, or back). Run again, it skips what
    /// is there. Stop the registry first. Exits 1 if anything was not copied.
    Migrate {
        /// The configuration whose store is read.
        #[arg(long)]
        from: PathBuf,
        /// The configuration whose store is written.
        #[arg(long)]
        to: PathBuf,
    },
    /// Bring another registry's store into this one's.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Access-control tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Imports a zot store (an OCI image layout per repository under its
    /// rootDirectory): every repository, tag, manifest, referrer and blob,
    /// verified, into the store that CONFIG names. Run again, it skips
    /// what is there and goes on. Exits 1 if anything could not be imported.
    Zot {
        /// zot's storage.rootDirectory (read, never written).
        root: PathBuf,
        /// Berth's configuration; its storage must be another directory.
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the decision for one request and the rule that made it.
    Explain {
        config: PathBuf,
        /// The user (omit for an anonymous request).
        #[arg(long)]
        user: Option<String>,
        /// The user's groups, comma-separated (static groups from the
        /// configuration are added).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// read, create, update or delete.
        #[arg(long)]
        action: String,
        /// The repository name.
        #[arg(long)]
        repo: String,
    },
}

fn explain(
    config: &std::path::Path,
    user: Option<String>,
    mut groups: Vec<String>,
    action: &str,
    repo: &str,
) -> Result<String, String> {
    use berth_auth::{Action, Identity, Method, Policy};
    let settings = settings_from(config).map_err(|e| e.to_string())?;
    let action = Action::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let policy = match (&settings.access_control, settings.auth.is_some()) {
        (Some(ac), _) => {
            Policy::new(&berth_server::auth::policy_spec(ac)).map_err(|e| e.to_string())?
        }
        (None, true) => Policy::authenticated_only(),
        (None, false) => Policy::open(),
    };
    let who = match user {
        None => Identity::anonymous(),
        Some(u) => {
            groups.extend(policy.static_groups(&u));
            Identity::user(&u, groups, Method::Htpasswd)
        }
    };
    let d = policy.decide(&who, action, repo);
    let verdict = if d.allowed { "ALLOW" } else { "DENY" };
    let name = who.user.as_deref().unwrap_or("anonymous");
    let mut text = format!("{verdict}: {name} {action} {repo}\n  because {}", d.reason);
    if matches!(action, Action::Create | Action::Update) {
        text.push_str(
            "\n  note: a push to an existing tag needs update, except the tag \"latest\", \
             which create may move (as in zot); without update, racing pushes to a new tag \
             create it once and the others are denied",
        );
    }
    Ok(text)
}

use config::settings_from;

async fn open_registry(settings: &Settings) -> Result<berth_core::Registry, String> {
    let store = berth_server::store::open(settings).await?;
    Ok(berth_core::Registry::new(
        store,
        berth_core::Options::default(),
    ))
}

/// Loads a configuration, opens its storage, and runs offline work on a
/// small runtime. A bad configuration exits 2, a failure 1.
fn offline<T, F, Fut>(config: &std::path::Path, what: &str, work: F) -> Result<T, ExitCode>
where
    F: FnOnce(Settings, berth_core::Registry) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let settings = settings_from(config).map_err(|e| {
        eprintln!("invalid configuration: {e}");
        ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{what} failed: {e}");
            ExitCode::FAILURE
        })?;
    let run = async {
        let registry = open_registry(&settings).await?;
        work(settings, registry).await
    };
    runtime.block_on(run).map_err(|e| {
        eprintln!("{what} failed: {e}");
        ExitCode::FAILURE
    })
}

/// Opens the shared store of a configuration, as start-up does.
fn verify_store(s: &Settings) -> Result<(), config::ConfigError> {
    let origin = s
        .config_path
        .as_ref()
        .map_or(String::new(), |p| p.display().to_string());
    let failed = |message: String| config::ConfigError::Key {
        path: origin.clone(),
        key: "storage".into(),
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    runtime
        .block_on(berth_server::store::open(s))
        .map(|_| ())
        .map_err(failed)
}

fn migrate(from: &std::path::Path, to: &std::path::Path) -> ExitCode {
    let target = match settings_from(to) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let report = offline(from, "migrate", |source, registry| async move {
        let same = match (&source.shared, &target.shared) {
            (None, None) => {
                let a = std::fs::canonicalize(&source.root_directory).ok();
                a.is_some() && a == std::fs::canonicalize(&target.root_directory).ok()
            }
            (Some(a), Some(b)) => a.postgres == b.postgres && a.s3 == b.s3,
            _ => false,
        };
        if same {
            return Err("--from and --to name the same store".into());
        }
        let dest = berth_server::store::open(&target).await?;
        let mut every = Every::second();
        registry
            .migrate_to(dest.as_ref(), |r| {
                if every.due() {
                    eprintln!(
                        "migrate: {} objects copied ({} MB), {} already there",
                        r.copied,
                        r.bytes / 1_000_000,
                        r.present
                    );
                }
            })
            .await
            .map_err(|e| e.to_string())
    });
    let r = match report {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!(
        "migrate: copied {} objects ({} bytes); {} already there",
        r.copied, r.bytes, r.present
    );
    println!(
        "verified: {} objects read back as in the source",
        r.verified
    );
    for p in &r.problems {
        println!("problem: {p}");
    }
    if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Paces progress lines: `due` is true at most once a second.
struct Every {
    last: std::time::Instant,
}

impl Every {
    fn second() -> Every {
        Every {
            last: std::time::Instant::now(),
        }
    }

    fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now.duration_since(self.last) >= std::time::Duration::from_secs(1) {
            self.last = now;
            true
        } else {
            false
        }
    }
}

fn gc(config: &std::path::Path, dry_run: bool) -> ExitCode {
    let report = offline(config, "gc", |settings, registry| async move {
        let delay = settings.gc.unwrap_or_default().delay;
        let retention_dry = settings.retention.dry_run;
        let opts = berth_core::gc::GcOptions {
            retention: Some(settings.retention.clone()),
            delay,
            dry_run,
            pace: 1.0,
        };
        registry
            .gc(opts, |line| eprintln!("gc: {line}"))
            .await
            .map(|r| (r, retention_dry))
            .map_err(|e| e.to_string())
    });
    let (r, retention_dry) = match report {
        Ok(r) => r,
        Err(code) => return code,
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "gc: {} repositories, {} blobs seen; {verb} {} links and {} blobs ({} bytes); {} restored (in use again)",
        r.repositories,
        r.blobs_seen,
        r.links_removed.len(),
        r.blobs_removed.len(),
        r.bytes_reclaimed,
        r.restored
    );
    if r.swept.objects > 0 {
        println!(
            "store: {verb} {} unrecorded objects ({} bytes) left by a replica that died",
            r.swept.objects, r.swept.bytes
        );
    }
    let retention_verb = if dry_run || retention_dry {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "retention: {retention_verb} {} tags and {} untagged manifests",
        r.retention.tags_removed.len(),
        r.retention.manifests_removed.len()
    );
    const SHOWN: usize = 100;
    for (repo, tag) in r.retention.tags_removed.iter().take(SHOWN) {
        println!("tag {repo}:{tag}");
    }
    for (repo, d) in r.retention.manifests_removed.iter().take(SHOWN) {
        println!("manifest {repo}@{d}");
    }
    for (repo, d) in r.links_removed.iter().take(SHOWN) {
        println!("link {repo} {d}");
    }
    for d in r.blobs_removed.iter().take(SHOWN) {
        println!("blob {d}");
    }
    let hidden = [
        r.retention.tags_removed.len(),
        r.retention.manifests_removed.len(),
        r.links_removed.len(),
        r.blobs_removed.len(),
    ]
    .iter()
    .map(|n| n.saturating_sub(SHOWN))
    .sum::<usize>();
    if hidden > 0 {
        println!("... and {hidden} more");
    }
    ExitCode::SUCCESS
}

fn scrub(config: &std::path::Path) -> ExitCode {
    let report = offline(config, "scrub", |_settings, registry| async move {
        let mut every = Every::second();
        registry
            .scrub(|r| {
                if every.due() {
                    eprintln!(
                        "scrub: {} objects, {} MB checked",
                        r.checked,
                        r.bytes / 1_000_000
                    );
                }
            })
            .await
            .map_err(|e| e.to_string())
    });
    let r = match report {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!(
        "scrub: {} objects, {} bytes checked, {} corrupt",
        r.checked,
        r.bytes,
        r.corrupt.len()
    );
    for d in &r.corrupt {
        println!("corrupt (quarantined): {d}");
    }
    if r.corrupt.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn import_zot(root: &std::path::Path, config: &std::path::Path) -> ExitCode {
    if !root.is_dir() {
        eprintln!("import: {} is not a directory", root.display());
        return ExitCode::from(2);
    }
    let report = offline(config, "import", |settings, registry| async move {
        let source = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
        // Only a local store can overlap the source.
        let dest = match settings.shared {
            Some(_) => None,
            None => Some(
                std::fs::canonicalize(&settings.root_directory)
                    .map_err(|e| format!("{}: {e}", settings.root_directory.display()))?,
            ),
        };
        if let Some(dest) = dest.filter(|d| source.starts_with(d) || d.starts_with(&source)) {
            return Err(format!(
                "the zot store {} and Berth's storage.rootDirectory {} overlap: point \
                 rootDirectory at a new directory, import, then serve from it",
                source.display(),
                dest.display()
            ));
        }
        let reader = berth_storage::fs::FsBackend::reader(&source);
        let mut every = Every::second();
        let mut shown = String::new();
        registry
            .import_layouts(&reader, |p| {
                let r = p.report;
                if every.due() || p.repository != shown {
                    eprintln!(
                        "import: [{}/{}] {}: {} manifests, {} blobs ({} MB), {} tags so far; {} already here",
                        p.index,
                        p.of,
                        p.repository,
                        r.manifests,
                        r.blobs,
                        r.bytes / 1_000_000,
                        r.tags,
                        r.present
                    );
                    shown = p.repository.to_owned();
                }
            })
            .await
            .map_err(|e| e.to_string())
    });
    let r = match report {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!(
        "import: {} repositories; imported {} tags, {} manifests, {} blobs ({} bytes); {} already here",
        r.repositories, r.tags, r.manifests, r.blobs, r.bytes, r.present
    );
    println!(
        "verified: {} tags, {} manifests, {} blobs read back as in the source",
        r.verified_tags, r.verified_manifests, r.verified_blobs
    );
    for p in &r.problems {
        println!("problem: {p}");
    }
    if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!(
            "import: {} problems; what else could be imported was",
            r.problems.len()
        );
        ExitCode::FAILURE
    }
}

/// Keeps request-body buffers (hyper reads up to ~400 KiB at a time) on
/// the heap and reused, rather than mapped and unmapped for every read:
/// without this, a 1 GiB push takes 60-75 thousand page faults, each a
/// zeroed page; with it, about 3.5 thousand, for 3-4 MiB more peak RSS.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { config } => {
            // The same checks `serve` makes before it starts.
            let checked = settings_from(&config)
                .and_then(|s| config::check::check(&s).map(|warnings| (s, warnings)));
            // The shared store is opened as `serve` opens it: unreachable,
            // or refusing the credentials, it is refused here too.
            let checked = checked.and_then(|(s, w)| match &s.shared {
                None => Ok((s, w)),
                Some(_) => verify_store(&s).map(|()| (s, w)),
            });
            match checked {
                Ok((s, warnings)) => {
                    println!("{}: valid", config.display());
                    for w in &warnings {
                        println!("  warning: {w}");
                    }
                    for f in &s.inactive {
                        println!("  not active in this build: {f}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    user,
                    groups,
                    action,
                    repo,
                },
        } => match explain(&config, user, groups, &action, &repo) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("berth policy explain: {e}");
                ExitCode::from(2)
            }
        },
        Command::Scrub { config } => scrub(&config),
        Command::Import {
            command: ImportCommand::Zot { root, config },
        } => import_zot(&root, &config),
        Command::Migrate { from, to } => migrate(&from, &to),
        Command::Gc { dry_run, config } => gc(&config, dry_run),
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
            // Everything start-up opens is checked before anything starts,
            // by the same function `verify` runs.
            // (Its warnings are logged by the parts that load those files.)
            if let Err(e) = config::check::check(&settings) {
                eprintln!("invalid configuration: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = berth_server::logging::init(&settings) {
                let path = settings
                    .log_output
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string());
                eprintln!("invalid configuration: log.output {path}: {e}");
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
