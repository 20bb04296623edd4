//! Command-line interface: raw arguments (clap) → a command on the library → exit code.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use dirsync::config::{self, Config};
use dirsync::exit;
use dirsync::plan::Mode;
use dirsync::store::{AuditQuery, Store};
use dirsync::sync;
use dirsync::text::visible;

/// Appends one line of a command's output to `$out` (a `String`), printed whole by
/// [`emit`].
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Prints a command's output. A reader that stopped reading (`| head`) is not an
/// error: the command has said what was wanted.
fn emit(out: &str) -> u8 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => exit::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            exit::FAILURE
        }
    }
}

/// Keep SaaS admin API users and groups in step with a company directory.
#[derive(Debug, Parser)]
#[command(name = "dirsync", version, about, long_about = None)]
struct Cli {
    /// Config file [default: $DIRSYNC_CONFIG, else /etc/dirsync/dirsync.toml]
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run as a service: sync on the configured schedule until stopped (SIGTERM),
    /// reloading the config on SIGHUP.
    Run,
    /// Push what changed since the last confirmed push.
    Sync(RunArgs),
    /// Ignore the snapshot: push every mapped group and user, then rebuild the snapshot.
    Resync(RunArgs),
    /// Validate the config, read the source, try to reach every target; push nothing.
    Check {
        /// Only validate the config (secrets and files included); no network, no source.
        #[arg(long)]
        offline: bool,
    },
    /// Show the audit log, newest first.
    Audit(AuditArgs),
    /// Show the last runs and the operations still pending.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the removals and disables held back by a safety limit.
    Held {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send a held set's removals that are still planned (a member who came back is
    /// not removed), with the rest of the target's plan.
    Approve {
        /// The held set's id, from `dirsync held`.
        id: String,
        /// Wait for a running sync to finish instead of exiting with code 7.
        #[arg(long)]
        wait: bool,
    },
    /// Send exactly the operations of a plan saved by `sync --dry-run --out`, if every
    /// target still has what the plan was computed against.
    Apply {
        /// The plan file.
        plan: PathBuf,
        /// Wait for a running sync to finish instead of exiting with code 7.
        #[arg(long)]
        wait: bool,
    },
    /// Read each confirmed group's members back from its target and report those
    /// added or removed behind dirsync's back. Exits with code 3 when any differ, a
    /// group cannot be read, or a target has no way to read groups back.
    Verify {
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Mark the drifted groups and run a sync (safety limits and audit as usual)
        /// that sends them their lists again.
        #[arg(long)]
        repair: bool,
        /// Wait for a running sync to finish instead of exiting with code 7.
        #[arg(long)]
        wait: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drop a held set; its removals are held again by the next run that plans them.
    Discard {
        /// The held set's id, from `dirsync held`.
        id: String,
        /// Wait for a running sync to finish instead of exiting with code 7.
        #[arg(long)]
        wait: bool,
    },
    /// Write a commented starting config for a source and a target; refuses to
    /// overwrite an existing file.
    Init(InitArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the config file's JSON Schema, for editors with a TOML language server.
    Schema,
    /// Print the man page (roff), or write one per command into a directory.
    Man {
        /// Write `dirsync.1` and a page per subcommand (`dirsync-sync.1`, …) into
        /// this directory instead of printing `dirsync.1`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Print the plan; send nothing and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this target.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Allow, for this run only, removals over the safety limits.
    #[arg(long)]
    allow_removals: bool,
    /// Wait for a running sync to finish instead of exiting with code 7.
    #[arg(long)]
    wait: bool,
    /// With --dry-run: also write the plan to this file, for `dirsync apply`.
    #[arg(long, value_name = "PLAN.json", requires = "dry_run")]
    out: Option<PathBuf>,
}

impl RunArgs {
    /// A sync of every target, as `approve` and `apply` run it.
    fn plain(wait: bool) -> RunArgs {
        RunArgs {
            dry_run: false,
            target: None,
            allow_removals: false,
            wait,
            out: None,
        }
    }
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Where users and groups come from.
    #[arg(long, value_enum)]
    source: InitSource,
    /// A built-in target preset, or `http` for an API described in the config alone.
    #[arg(long, value_name = "PRESET", value_parser = clap::builder::PossibleValuesParser::new(dirsync::init::target_names()))]
    target: String,
    /// Where to write [default: the --config path]
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// The directory the config's secret files (and CA file) are named in.
    #[arg(long, value_name = "DIR", default_value = "/etc/dirsync")]
    secrets_dir: PathBuf,
    /// Name the secrets as systemd credentials (`X_credential`), loaded from the
    /// files in --secrets-dir by the units' LoadCredential=, which the service's
    /// dynamic user needs; prints the drop-in to install.
    #[arg(long)]
    credentials: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InitSource {
    Csv,
    Openldap,
    ActiveDirectory,
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Only this run: its id, or the end of it (the table's `run` column).
    #[arg(long)]
    run: Option<String>,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Only this entity (target id or name).
    #[arg(long)]
    entity: Option<String>,
    /// Only rows at or after a time: RFC 3339 (2026-11-24T08:00:00Z) or an age
    /// before now (2h, 3d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only rows before a time, in the forms --since takes.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// At most this many rows [default: 50, or all with --since or --until].
    #[arg(long, value_name = "N")]
    limit: Option<i64>,
    /// Output: a table, JSON lines, or CSV with a header row.
    #[arg(long, value_enum, default_value_t = AuditFormat::Table)]
    format: AuditFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

/// How `dirsync audit` prints its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuditFormat {
    /// Aligned columns for a terminal; long details are cut.
    Table,
    /// One JSON object per line, every field whole.
    Json,
    /// RFC 4180 CSV with a header row, for spreadsheets; summary and drift as JSON text.
    Csv,
}

/// Rows `dirsync audit` shows when neither a limit nor a time range is given.
const AUDIT_DEFAULT_LIMIT: i64 = 50;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            });
        }
    };
    init_logging(cli.log_format, &cli.log_level);
    // At least two workers: the command's CPU-bound phases (mapping, building the
    // requests) hold the worker they run on, and `dirsync run` must still answer
    // /healthz and feed the watchdog meanwhile, on a one-core host too.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let code = runtime.block_on(dispatch(cli));
    // Everything the command started has finished: nothing to wait for.
    runtime.shutdown_background();
    ExitCode::from(code)
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd the journal stamps every line; a second timestamp is noise.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match (format, journal) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).init(),
        (LogFormat::Text, false) => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn load(path: &Path) -> Result<Config, u8> {
    let config = config::load(path).map_err(|e| config_error(&e))?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn config_error(e: &config::ConfigError) -> u8 {
    report_error(e);
    exit::CONFIG
}

fn report_error(e: &dyn std::error::Error) {
    tracing::error!("{e}");
    // Logs may go to a journal; a person at a terminal also sees the error plainly.
    if std::io::stderr().is_terminal() {
        eprintln!("error: {e}");
    }
}

async fn dispatch(cli: Cli) -> u8 {
    let config_path = config::resolve_path(cli.config);
    // Reading the state needs only its path, not the secrets a run needs.
    let state_db = || config::load_state_db(&config_path).map_err(|e| config_error(&e));
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "dirsync", &mut std::io::stdout());
            return exit::SUCCESS;
        }
        Command::Man { dir } => return man(dir.as_deref()),
        Command::Schema => {
            print!("{}", config::schema());
            return exit::SUCCESS;
        }
        Command::Init(args) => return init(&config_path, args),
        Command::Audit(args) => {
            return match state_db() {
                Ok(state_db) => audit(&state_db, args).await,
                Err(code) => code,
            };
        }
        Command::Status { json } => {
            return match state_db() {
                Ok(state_db) => status(&state_db, json).await,
                Err(code) => code,
            };
        }
        Command::Held { json } => {
            return match state_db() {
                Ok(state_db) => held(&state_db, json).await,
                Err(code) => code,
            };
        }
        Command::Discard { id, wait } => {
            return match state_db() {
                Ok(state_db) => discard(&state_db, &id, wait).await,
                Err(code) => code,
            };
        }
        _ => {}
    }
    let config = match load(&config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Run => daemon(&config_path, config).await,
        Command::Check { offline: true } => {
            println!("config {}: valid", config.path.display());
            print_limits(&config);
            println!("{}", dirsync::notify::describe(&config));
            exit::SUCCESS
        }
        Command::Check { offline: false } => check(&config).await,
        Command::Sync(args) => run(&config, Mode::Sync, args, Extra::None).await,
        Command::Resync(args) => run(&config, Mode::Resync, args, Extra::None).await,
        Command::Apply { plan, wait } => {
            run(&config, Mode::Sync, RunArgs::plain(wait), Extra::Apply(plan)).await
        }
        Command::Approve { id, wait } => {
            let by = local_user();
            run(
                &config,
                Mode::Sync,
                RunArgs::plain(wait),
                Extra::Approve(sync::Approve { id, by }),
            )
            .await
        }
        Command::Verify {
            target,
            repair,
            wait,
            json,
        } => {
            let opts = dirsync::verify::Options { target, repair, wait };
            verify(&config, opts, json).await
        }
        Command::Audit(_)
        | Command::Init(_)
        | Command::Status { .. }
        | Command::Held { .. }
        | Command::Discard { .. }
        | Command::Completions { .. }
        | Command::Schema
        | Command::Man { .. } => {
            unreachable!("handled above")
        }
    }
}

/// `dirsync verify`: the drift per group; with `repair`, the drifted groups marked
/// and a sync of their targets.
async fn verify(config: &Config, opts: dirsync::verify::Options, json: bool) -> u8 {
    use dirsync::verify::VerifyError;
    let report = match dirsync::verify::verify(config, &opts).await {
        Ok(r) => r,
        Err(e) => {
            report_error(&e);
            return match e {
                VerifyError::UnknownTarget(_) => exit::USAGE,
                VerifyError::Lock(dirsync::lock::LockError::Held { .. }) => exit::LOCKED,
                VerifyError::Target(_) => exit::CONFIG,
                VerifyError::Lock(_) | VerifyError::Store(_) => exit::FAILURE,
            };
        }
    };
    let mut out = String::new();
    if json {
        say!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_verify(&mut out, &report);
    }
    if emit(&out) != exit::SUCCESS {
        return exit::FAILURE;
    }
    if !report.marked {
        return if report.clean() {
            exit::SUCCESS
        } else {
            exit::PARTIAL
        };
    }
    // The marks are in the state database: a sync that takes the lock before this one
    // corrects the groups just the same, so this one waits for it.
    let args = RunArgs {
        target: opts.target,
        ..RunArgs::plain(true)
    };
    let code = run(config, Mode::Sync, args, Extra::None).await;
    match code {
        exit::SUCCESS if !report.unreadable.is_empty() || !report.not_verifiable.is_empty() => exit::PARTIAL,
        code => code,
    }
}

fn print_verify(out: &mut String, report: &dirsync::verify::Report) {
    let shown = |ids: &std::collections::BTreeSet<String>| {
        ids.iter()
            .map(|i| i.escape_debug().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for t in &report.not_verifiable {
        say!(out, "target {}: not verified: {}", t.target, t.reason);
    }
    for u in &report.unreadable {
        say!(
            out,
            "target {}: group {:?} ({}): cannot read its members: {}",
            u.target,
            u.name,
            u.group.escape_debug(),
            u.error
        );
    }
    for d in &report.drift {
        if d.missing {
            say!(
                out,
                "target {}: group {:?} ({}): not in the target",
                d.target,
                d.name,
                d.group.escape_debug()
            );
            continue;
        }
        say!(
            out,
            "target {}: group {:?} ({}): +{} -{} member(s) differ from what dirsync confirmed",
            d.target,
            d.name,
            d.group.escape_debug(),
            d.added.len(),
            d.removed.len()
        );
        if !d.added.is_empty() {
            say!(out, "    added in the target: {}", shown(&d.added));
        }
        if !d.removed.is_empty() {
            say!(out, "    removed in the target: {}", shown(&d.removed));
        }
    }
    let mut summary = format!(
        "{} group(s) checked, {} with drift ({} member(s))",
        report.groups_checked,
        report.drift.len(),
        report.drifted_members()
    );
    if !report.unreadable.is_empty() {
        summary.push_str(&format!(", {} could not be read", report.unreadable.len()));
    }
    if !report.not_verifiable.is_empty() {
        summary.push_str(&format!(
            "; {} target(s) not verifiable",
            report.not_verifiable.len()
        ));
    }
    say!(out, "{summary}");
    if report.marked {
        say!(out, "marked the drifted groups; syncing to correct them");
    }
}

/// `dirsync man`: `dirsync.1` on stdout, or every page (one per subcommand, as the
/// package installs them) written into `dir`, whose paths are printed.
fn man(dir: Option<&Path>) -> u8 {
    let result = match dir {
        None => page(Cli::command(), &page_date()).render(&mut std::io::stdout()),
        Some(dir) => write_pages(dir, &page_date()).and_then(|pages| {
            let mut out = std::io::stdout().lock();
            pages.iter().try_for_each(|p| writeln!(out, "{}", p.display()))
        }),
    };
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            let place = dir.map(|d| format!("{}: ", d.display())).unwrap_or_default();
            eprintln!("error: cannot write the man pages: {place}{e}");
            exit::FAILURE
        }
    }
}

/// One command's page, dated `date`. Every page names dirsync's version as its
/// source (a subcommand has none of its own).
fn page(cmd: clap::Command, date: &str) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .date(date)
        .source(concat!("dirsync ", env!("CARGO_PKG_VERSION")))
        .manual("dirsync manual")
}

/// The pages' date: `$SOURCE_DATE_EPOCH` when set (a package build, so that it is
/// reproducible), else today. An empty date would shift the title line's fields.
fn page_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .unwrap_or_else(chrono::Utc::now)
        .format("%Y-%m-%d")
        .to_string()
}

/// Writes `dirsync.1` and one page per visible subcommand (`dirsync-sync.1`, …) into
/// `dir`, as `clap_mangen::generate_to` does, and returns their paths.
fn write_pages(dir: &Path, date: &str) -> std::io::Result<Vec<PathBuf>> {
    fn write(cmd: clap::Command, dir: &Path, date: &str, pages: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), dir, date, pages)?;
        }
        pages.push(page(cmd, date).generate_to(dir)?);
        Ok(())
    }
    // Built first, so each subcommand's page is titled `dirsync-NAME`; `help` is
    // clap's, not a command of dirsync's.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    write(cmd, dir, date, &mut pages)?;
    pages.sort();
    Ok(pages)
}

/// What a run does besides a sync: carry out an approval, or apply a saved plan.
enum Extra {
    None,
    Approve(sync::Approve),
    Apply(PathBuf),
}

async fn run(config: &Config, mode: Mode, args: RunArgs, extra: Extra) -> u8 {
    let (approve, apply) = match extra {
        Extra::None => (None, None),
        Extra::Approve(a) => (Some(a), None),
        Extra::Apply(path) => (None, Some(path)),
    };
    let opts = sync::Options {
        mode,
        dry_run: args.dry_run,
        target: args.target,
        allow_removals: args.allow_removals,
        wait: args.wait,
        approve,
        out: args.out,
        warm: None,
    };
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if shutdown_signal().await.is_ok() {
            tracing::warn!(
                "Stopping: no new operations start; those under way finish and are recorded. A second signal stops at once."
            );
            on_signal.cancel();
            if shutdown_signal().await.is_ok() {
                tracing::error!(
                    "Stopped at once by a second signal: what was under way is not recorded, and the next run sends it again."
                );
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
    let mut stdout = std::io::stdout();
    // A bar only for a person watching: not under systemd, cron or a pipe.
    let interactive =
        std::io::stderr().is_terminal() && !opts.dry_run && std::env::var_os("JOURNAL_STREAM").is_none();
    let bar = Bar::default();
    let progress: &dyn sync::Progress = if interactive { &bar } else { &sync::NoProgress };
    let result = match &apply {
        Some(path) => sync::apply(config, path, opts.wait, &cancel, progress).await,
        None => sync::run(config, &opts, &cancel, progress, &mut stdout).await,
    };
    let code = match &result {
        Ok(report) => {
            let _ = stdout.flush();
            let outcome = report.outcome();
            if !opts.dry_run {
                let total = |f: fn(&sync::TargetReport) -> usize| report.targets.iter().map(f).sum::<usize>();
                tracing::info!(
                    outcome = ?outcome,
                    pushed = total(|t| t.succeeded),
                    failed = total(|t| t.failed),
                    not_started = total(|t| t.not_started),
                    unmapped = total(|t| t.unmapped_users),
                    refused = report.targets.iter().filter(|t| t.refused.is_some()).count(),
                    "Run finished."
                );
            }
            exit::of_outcome(outcome)
        }
        Err(e) => {
            report_error(e);
            exit::of_error(e)
        }
    };
    dirsync::notify::after_run(config, &opts, result.as_ref()).await;
    code
}

/// An indicatif progress bar per target.
#[derive(Default)]
struct Bar {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl sync::Progress for Bar {
    fn start(&self, target: &str, total: usize) {
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {elapsed} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(target.to_owned());
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn advance(&self) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

async fn daemon(path: &Path, config: Config) -> u8 {
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let on_stop = shutdown.clone();
    tokio::spawn(async move {
        if shutdown_signal().await.is_ok() {
            tracing::info!("Received a stop signal.");
            on_stop.cancel();
        }
    });
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("Received SIGHUP: reloading the configuration.");
                    if reload_tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("Cannot listen for SIGHUP; reload is unavailable: {e}"),
    }
    let signals = dirsync::daemon::Signals {
        shutdown,
        reload: reload_rx,
    };
    match dirsync::daemon::run(path, config, signals).await {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            report_error(&e);
            exit::FAILURE
        }
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

async fn check(config: &Config) -> u8 {
    println!(
        "config {}: valid; state database {}",
        config.path.display(),
        config.state_db.display()
    );
    // An LDAP source also says how it connected and what looks wrong.
    let mut problems: Option<Vec<String>> = None;
    let read = match &config.source {
        config::SourceConfig::Ldap(ldap) => dirsync::source::ldap::read_with_report(ldap)
            .await
            .map(|(dir, report)| {
                println!(
                    "source {}: connected ({}), bound as {}",
                    ldap.url, report.transport, report.bound_as
                );
                problems = Some(report.problems());
                dir
            })
            .map_err(dirsync::source::SourceError::from),
        _ => dirsync::source::read(&config.source).await,
    };
    let dir = match read {
        Ok(d) => d,
        Err(e) => {
            report_error(&e);
            return exit::SOURCE;
        }
    };
    println!(
        "source: {} users, {} groups, {} memberships",
        dir.users.len(),
        dir.groups.len(),
        dir.membership_count()
    );
    if let config::SourceConfig::Ldap(ldap) = &config.source {
        match dirsync::source::ldap::offers_content_sync(ldap).await {
            Ok(None) => {}
            Ok(Some(true)) => println!("source: content synchronisation (RFC 4533) offered"),
            Ok(Some(false)) => problems
                .get_or_insert_default()
                .insert(0, dirsync::source::ldap::NO_CONTENT_SYNC.to_owned()),
            Err(e) => problems
                .get_or_insert_default()
                .push(format!("cannot read the server's root DSE: {e}")),
        }
        match dirsync::source::ldap::probe_deleted_objects(ldap).await {
            Ok(None) => {}
            Ok(Some((true, _))) => {
                println!("source: deleted objects readable: a read of what changed sees deletions")
            }
            Ok(Some((false, naming_context))) => problems
                .get_or_insert_default()
                .insert(0, dirsync::source::ldap::deletions_unseen(&naming_context)),
            Err(e) => problems
                .get_or_insert_default()
                .push(format!("cannot read the domain controller's state: {e}")),
        }
    }
    match problems {
        Some(p) if p.is_empty() => println!("source: no problems found"),
        Some(p) => {
            for problem in p.iter().take(10) {
                println!("source problem: {problem}");
            }
        }
        None => {}
    }
    print_limits(config);
    println!("{}", dirsync::notify::describe(config));
    let mut code = exit::SUCCESS;
    for t in &config.targets {
        let options = dirsync::mapping::MapOptions {
            all_users: false,
            member_details: true,
        };
        for source in dirsync::mapping::unmatched_explicit(&dir, &t.groups) {
            println!(
                "target {}: `groups.map` names `{}`, which is no group of the source (by id or name): it is not synced",
                t.name,
                visible(source)
            );
        }
        match dirsync::mapping::desired_state(&dir, &t.groups, &t.users, &t.templates, options) {
            Ok(d) => println!(
                "target {}: {} mapped group(s), {} mapped user(s), {} unmapped; {}",
                t.name,
                d.groups.len(),
                d.users.len(),
                d.unmapped.len(),
                reach(t).await
            ),
            Err(e) => {
                println!("target {}: {e}", t.name);
                code = exit::CONFIG;
            }
        }
    }
    code
}

/// Each target's safety limits, defaults included, so an operator sees what a run
/// would refuse before it does.
fn print_limits(config: &Config) {
    for t in &config.targets {
        println!("target {}: safety limits: {}", t.name, t.limits);
    }
}

/// Whether the target answers, without a request its API does not list: the probe the
/// config declares, else a TCP connection and, for https, a TLS handshake. A strict
/// API records an undocumented request (`HEAD /`, say) as a contract violation.
async fn reach(t: &config::TargetConfig) -> String {
    let url = &t.spec.base_url;
    let timeout = t.spec.timeout;
    if let Some(probe) = &t.probe {
        return send_probe(url, probe, timeout).await;
    }
    // The origin only: the base URL may carry a user and password.
    let origin = url.origin().ascii_serialization();
    match tokio::time::timeout(timeout, handshake(url)).await {
        Ok(Ok(connection)) => format!("{origin} accepts {connection}"),
        Ok(Err(why)) => format!("{origin} cannot be reached: {why}"),
        Err(_) => format!(
            "{origin} does not answer within {}",
            humantime::format_duration(timeout)
        ),
    }
}

/// Connects to the base URL's host and, for https, completes a TLS handshake with the
/// system's trusted roots. Says what kind of connection was accepted.
async fn handshake(url: &reqwest::Url) -> Result<&'static str, String> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("the base URL names no host".into()),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    if url.scheme() != "https" {
        return Ok("a TCP connection");
    }
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    // A close_notify, so the server logs a clean close rather than a reset.
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
    Ok("a TLS connection (certificate verified)")
}

/// The system's trusted roots, as the HTTP client's verifier loads them on Linux
/// (rustls-native-certs; `SSL_CERT_FILE` replaces them).
fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err("no trusted CA certificate found on this system".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set TLS up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// Sends the declared probe once: no credentials, no redirects followed, no retries.
async fn send_probe(base: &reqwest::Url, probe: &config::Probe, timeout: std::time::Duration) -> String {
    let shown = format!("probe {} {}", probe.method, probe.path);
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dirsync/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return format!("{shown}: cannot create an HTTP client: {e}"),
    };
    // Joined as every request to the target is: the base URL's own path is kept.
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), probe.path);
    let mut url = match reqwest::Url::parse(&joined) {
        Ok(u) => u,
        Err(e) => return format!("{shown}: invalid URL: {e}"),
    };
    // reqwest would turn a user and password in the URL into basic auth.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    match client.request(probe.method.clone(), url).send().await {
        Ok(r) if r.status().is_success() => format!("{shown} answers HTTP {}", r.status().as_u16()),
        Ok(r) => format!("{shown} answers HTTP {}, not a success", r.status().as_u16()),
        Err(e) if e.is_timeout() => format!(
            "{shown} gets no answer within {}",
            humantime::format_duration(timeout)
        ),
        Err(e) if e.is_connect() => format!(
            "{shown} cannot be sent: {} cannot be reached",
            base.origin().ascii_serialization()
        ),
        Err(_) => format!("{shown} gets no valid HTTP answer"),
    }
}

async fn open_existing(state_db: &Path) -> Result<Store, u8> {
    if !state_db.exists() {
        eprintln!(
            "no state database at {} yet: no run has happened",
            state_db.display()
        );
        return Err(exit::SUCCESS);
    }
    Store::open(state_db).await.map_err(|e| {
        report_error(&e);
        exit::FAILURE
    })
}

/// `dirsync init`: the starting config written where no file is, and what to do next.
fn init(config_path: &Path, args: InitArgs) -> u8 {
    let source = match args.source {
        InitSource::Csv => dirsync::init::Source::Csv,
        InitSource::Openldap => dirsync::init::Source::OpenLdap,
        InitSource::ActiveDirectory => dirsync::init::Source::ActiveDirectory,
    };
    let out = args.out.unwrap_or_else(|| config_path.to_owned());
    // The config reads a relative path from its own directory, not from here.
    let secrets_dir = match std::path::absolute(&args.secrets_dir) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: --secrets-dir {}: {e}", args.secrets_dir.display());
            return exit::USAGE;
        }
    };
    let starter = match dirsync::init::render(source, &args.target, &out, &secrets_dir, args.credentials) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    // create_new: an existing config (or one written meanwhile) is never replaced.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&out)
        .and_then(|mut f| f.write_all(starter.text.as_bytes()));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "error: {}: already exists; not overwritten (choose another path with --out)",
                out.display()
            );
            return exit::USAGE;
        }
        Err(e) => {
            eprintln!("error: {}: {e}", out.display());
            return exit::FAILURE;
        }
    }
    println!("wrote {}", out.display());
    println!("next:");
    for f in &starter.files {
        println!("  write {}", f.display());
    }
    println!("  replace every CHANGE-ME in {}", out.display());
    let config = format!("--config {}", out.display());
    // The credentials carry their files' names, so the secrets directory stands in
    // for the one systemd makes.
    let env = match starter.credentials.is_empty() {
        true => String::new(),
        false => format!("CREDENTIALS_DIRECTORY={} ", secrets_dir.display()),
    };
    println!("  {env}dirsync {config} check --offline");
    println!("  {env}dirsync {config} check");
    if !starter.credentials.is_empty() {
        println!("  give the secrets to the service: as root, `systemctl edit dirsync` and");
        println!("  `systemctl edit dirsync-resync`, each with:");
        println!("    [Service]");
        for (name, file) in &starter.credentials {
            println!("    LoadCredential={name}:{}", file.display());
        }
    }
    exit::SUCCESS
}

async fn audit(state_db: &Path, args: AuditArgs) -> u8 {
    if args.run.as_deref().is_some_and(str::is_empty) {
        eprintln!("error: --run: empty; give a run id or the end of one (the table's `run` column)");
        return exit::USAGE;
    }
    let (since, until) = match audit_range(args.since.as_deref(), args.until.as_deref(), chrono::Utc::now()) {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("error: {msg}");
            return exit::USAGE;
        }
    };
    let store = match open_existing(state_db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let limit = match args.limit {
        Some(n) => Some(n),
        None if since.is_some() || until.is_some() => None,
        None => Some(AUDIT_DEFAULT_LIMIT),
    };
    let q = AuditQuery {
        run_id: args.run,
        target: args.target,
        entity: args.entity,
        since,
        until,
        limit,
    };
    let rows = match store.audit(&q).await {
        Ok(r) => r,
        Err(e) => {
            report_error(&e);
            return exit::FAILURE;
        }
    };
    let format = if args.json { AuditFormat::Json } else { args.format };
    let mut out = std::io::stdout().lock();
    let written = match format {
        AuditFormat::Table => audit_table(&mut out, &rows),
        AuditFormat::Json => rows
            .iter()
            .try_for_each(|r| writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default())),
        AuditFormat::Csv => audit_csv(&mut out, &rows),
    };
    match written {
        Ok(()) => exit::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the audit rows: {e}");
            exit::FAILURE
        }
    }
}

/// The columns of `dirsync audit --format csv`, in order.
const AUDIT_CSV_HEADER: [&str; 13] = [
    "at",
    "run_id",
    "target",
    "operation",
    "entity_id",
    "entity_name",
    "outcome",
    "http_status",
    "attempts",
    "summary",
    "drift",
    "error",
    "warning",
];

/// The rows as CSV: a header, then one record per row, quoted by the csv crate where
/// needed; summary and drift are JSON text. A cell a spreadsheet would run as a
/// formula gets a leading `'` (see `inert`).
fn audit_csv(out: &mut impl Write, rows: &[dirsync::store::AuditRow]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(AUDIT_CSV_HEADER)?;
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        w.write_record([
            r.at.clone(),
            r.run_id.clone(),
            inert(&r.target),
            r.operation.clone(),
            inert(&r.entity_id),
            inert(&r.entity_name),
            r.outcome.clone(),
            r.http_status.map(|s| s.to_string()).unwrap_or_default(),
            r.attempts.to_string(),
            json(&r.summary),
            json(&r.drift),
            inert(r.error.as_deref().unwrap_or_default()),
            inert(r.warning.as_deref().unwrap_or_default()),
        ])?;
    }
    w.flush()
}

/// A text cell as a spreadsheet shows it but never runs it: names and ids come from
/// the directory and errors from the targets, so a group named `=HYPERLINK(…)` would
/// otherwise be a formula in the auditor's spreadsheet (OWASP's CSV injection). A
/// leading `'` makes such a cell text; every other cell is written as it is.
fn inert(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

/// `--since` and `--until` as UTC times in the audit table's form, checked against
/// each other. Errors name the flag and the value.
fn audit_range(
    since: Option<&str>,
    until: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Option<String>, Option<String>), String> {
    let parse = |flag: &str, value: Option<&str>| {
        value
            .map(|v| parse_time(v, now).map_err(|msg| format!("--{flag} `{v}`: {msg}")))
            .transpose()
    };
    let since_at = parse("since", since)?;
    let until_at = parse("until", until)?;
    if let (Some(s), Some(u)) = (since_at, until_at)
        && u < s
    {
        return Err(format!(
            "--until `{}` is before --since `{}`",
            until.unwrap_or_default(),
            since.unwrap_or_default()
        ));
    }
    Ok((
        since_at.map(dirsync::store::stamp),
        until_at.map(dirsync::store::stamp),
    ))
}

/// An RFC 3339 time, or an age before `now` (`2h`, `3d`).
fn parse_time(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age = humantime::parse_duration(value)
        .map_err(|_| "neither an RFC 3339 time (2026-11-24T08:00:00Z) nor an age (2h, 3d)".to_owned())?;
    let age = chrono::Duration::from_std(age).map_err(|_| "too long an age".to_owned())?;
    now.checked_sub_signed(age)
        .ok_or_else(|| "too long an age".to_owned())
}

/// The rows as the aligned table a terminal shows.
fn audit_table(out: &mut impl Write, rows: &[dirsync::store::AuditRow]) -> std::io::Result<()> {
    let header = [
        cell("at", AT),
        cell("run", RUN),
        cell("target", TARGET),
        cell("operation", OPERATION),
        cell("entity", ENTITY),
        cell("outcome", OUTCOME),
    ];
    writeln!(out, "{} {:>4} {:>3}  detail", header.join(" "), "http", "try")?;
    for r in rows {
        let detail = match (&r.error, &r.summary) {
            (Some(e), _) => cut(&visible(e), DETAIL),
            (None, Some(s)) => {
                let n = |k: &str| s.get(k).and_then(|v| v.as_array()).map_or(0, Vec::len);
                let mut d = format!("+{} -{}", n("added"), n("removed"));
                if r.drift.is_some() {
                    d.push_str(" drift");
                }
                if let Some(w) = &r.warning {
                    d.push_str("; warning: ");
                    d.push_str(&visible(w));
                }
                cut(&d, DETAIL)
            }
            _ => String::new(),
        };
        let cells = [
            cell(&r.at, AT),
            // The end of the id: its start is a timestamp, alike for runs a minute apart.
            cell(
                r.run_id
                    .get(r.run_id.len().saturating_sub(RUN)..)
                    .unwrap_or(&r.run_id),
                RUN,
            ),
            cell(&r.target, TARGET),
            cell(&r.operation, OPERATION),
            entity_cell(&r.entity_name, &r.entity_id, ENTITY),
            cell(&r.outcome, OUTCOME),
        ];
        writeln!(
            out,
            "{} {:>4} {:>3}  {}",
            cells.join(" "),
            r.http_status.map(|s| s.to_string()).unwrap_or_default(),
            r.attempts,
            detail
        )?;
    }
    Ok(())
}

/// Widths of the audit table's columns, in terminal columns.
const AT: usize = 24;
const RUN: usize = 8;
const TARGET: usize = 12;
const OPERATION: usize = 15;
/// Room for `name (id)` with a UUID id and the start of the name.
const ENTITY: usize = 50;
const OUTCOME: usize = 8;
/// The last column is not padded; a long error is cut (`audit --json` has it whole).
const DETAIL: usize = 200;
/// The columns an entity's name keeps when a long id takes the rest.
const NAME_AT_LEAST: usize = 10;

/// `text` (already visible) cut to at most `width` terminal columns, ending in `…`
/// when something was cut.
fn cut(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// One table cell: `text` made visible, cut to `width` terminal columns and padded to
/// them, so that wide (CJK) and long names keep the next columns in place.
fn cell(text: &str, width: usize) -> String {
    let mut out = cut(&visible(text), width);
    let pad = width.saturating_sub(out.width());
    out.extend(std::iter::repeat_n(' ', pad));
    out
}

/// `name (id)` as one cell: the id, which tells entities apart, is kept whole unless
/// it leaves the name fewer than `NAME_AT_LEAST` columns.
fn entity_cell(name: &str, id: &str, width: usize) -> String {
    let id = cut(&visible(id), width.saturating_sub(NAME_AT_LEAST + 3));
    let name = cut(&visible(name), width.saturating_sub(id.width() + 3));
    cell(&format!("{name} ({id})"), width)
}

/// How long ago an RFC 3339 time was; `None` if it does not parse.
fn age(at: &str) -> Option<chrono::Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    Some(chrono::Utc::now() - at.with_timezone(&chrono::Utc))
}

/// Who runs this command, for the audit of an approval: the user behind `sudo`, else
/// the login name.
fn local_user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// A held set as `held --json` and `status --json` print it: the row, what it holds,
/// and its counts (disables and deletions apart).
fn held_json(r: &dirsync::store::HeldRow) -> serde_json::Value {
    let held = r.held();
    let mut v = serde_json::json!(r);
    v["reasons"] = serde_json::json!(held.reasons);
    v["groups"] = serde_json::json!(held.groups);
    v["users"] = serde_json::json!(held.users);
    v["deleted"] = serde_json::json!(held.deleted);
    v["disabled_users"] = held.disabled_users().into();
    v["deleted_users"] = held.deleted_users().into();
    v
}

/// How many member ids a held group shows before "… and N more".
const HELD_SHOWN: usize = 10;

async fn held(state_db: &Path, json: bool) -> u8 {
    let mut out = String::new();
    let store = match open_existing(state_db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rows = match store.held().await {
        Ok(r) => r,
        Err(e) => {
            report_error(&e);
            return exit::FAILURE;
        }
    };
    if json {
        let v: Vec<serde_json::Value> = rows.iter().map(held_json).collect();
        say!(out, "{:#}", serde_json::Value::from(v));
        return emit(&out);
    }
    if rows.is_empty() {
        say!(out, "no removals are held");
    }
    for r in &rows {
        let held = r.held();
        say!(
            out,
            "{} target {}: {}; held since {} (last {})",
            r.id,
            r.target,
            held.counts(),
            r.first_held_at,
            r.last_held_at
        );
        for why in &held.reasons {
            say!(out, "  why: {}", visible(why));
        }
        for (id, g) in &held.groups {
            let shown: Vec<String> = g
                .members
                .iter()
                .take(HELD_SHOWN)
                .map(|m| visible(m).into_owned())
                .collect();
            let more = g.members.len().saturating_sub(HELD_SHOWN);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            say!(
                out,
                "  group {:?} ({}) keeps {}{more}",
                visible(&g.name),
                visible(id),
                shown.join(", ")
            );
        }
        for (id, name) in &held.users {
            let stays = if held.deleted.contains(id) {
                "is not deleted"
            } else {
                "stays enabled"
            };
            say!(out, "  user {:?} ({}) {stays}", visible(name), visible(id));
        }
        say!(
            out,
            "  `dirsync approve {}` sends them; `dirsync discard {}` drops them",
            r.id,
            r.id
        );
    }
    emit(&out)
}

async fn discard(state_db: &Path, id: &str, wait: bool) -> u8 {
    // No run has held anything yet: the id names no set.
    if !state_db.exists() {
        report_error(&sync::SyncError::UnknownHeld(id.to_owned()));
        return exit::USAGE;
    }
    let store = match open_existing(state_db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Under the run lock: an approval run of the same set decides it at its end.
    let _lock = match dirsync::lock::RunLock::acquire(state_db, wait).await {
        Ok(lock) => lock,
        Err(e) => {
            report_error(&e);
            return match e {
                dirsync::lock::LockError::Held { .. } => exit::LOCKED,
                dirsync::lock::LockError::Io { .. } => exit::FAILURE,
            };
        }
    };
    match store.held_set(id).await {
        Ok(Some(row)) if row.status == "held" => {
            match store.decide_held(id, "discarded", &local_user()).await {
                Ok(()) => {
                    tracing::info!(
                        held = id,
                        target = row.target,
                        "Discarded the held set; the next run that plans these removals holds them again."
                    );
                    exit::SUCCESS
                }
                Err(e) => {
                    report_error(&e);
                    exit::FAILURE
                }
            }
        }
        Ok(Some(row)) => {
            report_error(&sync::SyncError::NotHeld {
                id: row.id,
                status: row.status,
            });
            exit::USAGE
        }
        Ok(None) => {
            report_error(&sync::SyncError::UnknownHeld(id.to_owned()));
            exit::USAGE
        }
        Err(e) => {
            report_error(&e);
            exit::FAILURE
        }
    }
}

async fn status(state_db: &Path, json: bool) -> u8 {
    let mut out = String::new();
    let store = match open_existing(state_db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let read = async {
        Ok::<_, dirsync::store::StoreError>((
            store.runs(10).await?,
            store.pending().await?,
            store.snapshot_counts().await?,
            store.invalid().await?,
            store.pauses(None, &dirsync::store::now()).await?,
            store.source_state().await?,
            store.held().await?,
            store.waiting_removals().await?,
        ))
    };
    let (runs, pending, counts, invalid, pauses, source, held, waiting) = match read.await {
        Ok(state) => state,
        Err(e) => {
            report_error(&e);
            return exit::FAILURE;
        }
    };
    if json {
        let source = source.as_ref().map(|s| {
            let mut v = serde_json::json!(s);
            v["token_age_seconds"] = serde_json::json!(age(&s.token_at).map(|a| a.num_seconds()));
            v
        });
        let v = serde_json::json!({
            "runs": runs, "pending": pending, "snapshot": counts, "invalid": invalid, "paused": pauses,
            "source": source, "held": held.iter().map(held_json).collect::<Vec<_>>(), "waiting_removals": waiting,
        });
        say!(out, "{v:#}");
        return emit(&out);
    }
    say!(out, "last runs:");
    for r in &runs {
        let counts = r
            .summary
            .as_ref()
            .and_then(|s| s.get("targets"))
            .and_then(|t| t.as_array())
            .map(|ts| {
                let sum = |k: &str| {
                    ts.iter()
                        .filter_map(|t| t.get(k).and_then(|v| v.as_u64()))
                        .sum::<u64>()
                };
                format!(
                    "pushed {}, failed {}, not started {}",
                    sum("succeeded"),
                    sum("failed"),
                    sum("not_started")
                )
            });
        say!(
            out,
            "  {} {:<6} {:<24} {:<8} {}",
            r.id,
            r.command,
            r.started_at,
            r.outcome.as_deref().unwrap_or("unfinished"),
            counts.unwrap_or_default()
        );
    }
    print_propagation(&mut out, &runs);
    say!(out, "source:");
    match &source {
        None => say!(out, "  not read yet"),
        Some(s) => {
            let token_age = age(&s.token_at)
                .and_then(|a| a.to_std().ok())
                .map(|a| humantime::format_duration(std::time::Duration::from_secs(a.as_secs())).to_string())
                .unwrap_or_else(|| "unknown".into());
            say!(
                out,
                "  {}: last read {} at {} ({})",
                s.kind,
                s.last_mode,
                s.last_read_at,
                visible(&s.last_reason)
            );
            say!(out, "  token written {} (age {token_age})", s.token_at);
            say!(
                out,
                "  last full read {}",
                s.last_full_at.as_deref().unwrap_or("never")
            );
            if let Some(why) = &s.force_full {
                say!(out, "  the next read is full: {}", visible(why));
            }
        }
    }
    say!(
        out,
        "held removals (`dirsync held` lists them, `dirsync approve ID` sends them):"
    );
    if held.is_empty() {
        say!(out, "  none");
    }
    for h in &held {
        say!(
            out,
            "  {} {}: {} since {}",
            h.id,
            h.target,
            h.held().counts(),
            h.first_held_at
        );
    }
    if !waiting.is_empty() {
        say!(
            out,
            "removals waiting out the removal delay (a member who comes back is not removed):"
        );
    }
    for w in &waiting {
        say!(
            out,
            "  {} group {}: {} absent since {}, removed after {}",
            w.target,
            visible(&w.group_id),
            visible(&w.member),
            w.since,
            w.due
        );
    }
    say!(out, "snapshot:");
    for (target, (groups, users)) in &counts {
        say!(out, "  {target}: {groups} group(s), {users} user(s) confirmed");
    }
    say!(out, "pending (last attempt failed):");
    if pending.is_empty() {
        say!(out, "  none");
    }
    for p in &pending {
        say!(
            out,
            "  {} {} {:?} ({}) since {}: {}",
            p.target,
            p.entity_kind,
            p.entity_name,
            visible(&p.entity_id),
            p.at,
            cut(&visible(p.error.as_deref().unwrap_or("")), DETAIL)
        );
    }
    say!(out, "invalid source data (not sent until the source is fixed):");
    if invalid.is_empty() {
        say!(out, "  none");
    }
    for i in &invalid {
        say!(
            out,
            "  {} {} {} ({}) since {}: {}",
            i.target,
            i.entity_kind,
            visible(&i.entity_name),
            visible(&i.entity_id),
            i.since,
            cut(&visible(&i.reason), DETAIL)
        );
    }
    if !pauses.is_empty() {
        say!(
            out,
            "paused (the target's Retry-After; nothing is sent before then):"
        );
    }
    for w in &pauses {
        say!(
            out,
            "  {} {} until {}{}",
            w.target,
            w.endpoint.as_deref().unwrap_or("every endpoint"),
            w.until,
            w.http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
        );
    }
    emit(&out)
}

/// Each target's propagation latency in the newest run that measured one: the time
/// from a directory change to the target's confirmation.
fn print_propagation(out: &mut String, runs: &[dirsync::store::RunRow]) {
    let mut shown = std::collections::BTreeMap::new();
    for r in runs {
        let targets = r
            .summary
            .as_ref()
            .and_then(|s| s.get("targets"))
            .and_then(|t| t.as_array());
        for t in targets.into_iter().flatten() {
            let (Some(name), Some(p)) = (t.get("name").and_then(|n| n.as_str()), t.get("propagation")) else {
                continue;
            };
            let seconds = |k: &str| p.get(k).and_then(serde_json::Value::as_f64).unwrap_or_default();
            let count = p
                .get("count")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_default();
            if count > 0 && !shown.contains_key(name) {
                let line = format!(
                    "p50 {}, p95 {}, max {} over {count} change(s), run {}",
                    span(seconds("p50_seconds")),
                    span(seconds("p95_seconds")),
                    span(seconds("max_seconds")),
                    r.id
                );
                shown.insert(name.to_owned(), line);
            }
        }
    }
    say!(
        out,
        "propagation (directory change to target confirmation, newest run that measured it):"
    );
    if shown.is_empty() {
        say!(out, "  none measured");
    }
    for (target, line) in &shown {
        say!(out, "  {target}: {line}");
    }
}

/// Seconds as an operator reads them: `0.4s`, `12s`, `3m 20s`, `1day 2h`.
fn span(seconds: f64) -> String {
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let whole = std::time::Duration::from_secs(seconds.round() as u64);
    humantime::format_duration(whole).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell a spreadsheet would run as a formula is written as text; ordinary names,
    /// and a sign inside a name, stay as they are.
    #[test]
    fn audit_cells_never_start_a_formula() {
        for cell in [
            "=HYPERLINK(\"http://127.0.0.1\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(inert(cell), format!("'{cell}"), "{cell:?}");
        }
        for cell in ["eng", "a=b", "", "'quoted", "k-8"] {
            assert_eq!(inert(cell), cell);
        }
    }

    #[test]
    fn audit_ranges_take_rfc3339_times_and_ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .expect("now")
            .with_timezone(&chrono::Utc);
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<(Option<&'a str>, Option<&'a str>), &'a str>,
        );
        let cases: &[Case] = &[
            (None, None, Ok((None, None))),
            (
                Some("2026-11-01T00:00:00Z"),
                Some("2026-12-01T00:00:00+01:00"),
                Ok((Some("2026-11-01T00:00:00.000Z"), Some("2026-11-30T23:00:00.000Z"))),
            ),
            (Some("2h"), None, Ok((Some("2026-12-03T10:00:00.000Z"), None))),
            (
                Some("3d"),
                Some("1d"),
                Ok((Some("2026-11-30T12:00:00.000Z"), Some("2026-12-02T12:00:00.000Z"))),
            ),
            (
                Some("yesterday"),
                None,
                Err(
                    "--since `yesterday`: neither an RFC 3339 time (2026-11-24T08:00:00Z) nor an age (2h, 3d)",
                ),
            ),
            (
                None,
                Some("2026-13-01T00:00:00Z"),
                Err(
                    "--until `2026-13-01T00:00:00Z`: neither an RFC 3339 time (2026-11-24T08:00:00Z) nor an age (2h, 3d)",
                ),
            ),
            (
                Some("2026-12-01T00:00:00Z"),
                Some("2026-11-01T00:00:00Z"),
                Err("--until `2026-11-01T00:00:00Z` is before --since `2026-12-01T00:00:00Z`"),
            ),
            (Some("1d"), Some("2d"), Err("--until `2d` is before --since `1d`")),
        ];
        for (since, until, want) in cases {
            let got = audit_range(*since, *until, now);
            let want = (*want)
                .map(|(s, u)| (s.map(str::to_owned), u.map(str::to_owned)))
                .map_err(str::to_owned);
            assert_eq!(got, want, "{since:?} {until:?}");
        }
    }

    #[test]
    fn a_cell_is_visible_text_in_exactly_its_width() {
        use unicode_width::UnicodeWidthStr;
        let cases: &[(&str, usize, &str)] = &[
            ("abc", 5, "abc  "),
            ("abcdef", 5, "abcd…"),
            ("東京", 5, "東京 "),
            ("東京都", 5, "東京…"),
            ("東京都", 4, "東… "),
            ("a\nb", 5, "a\\nb "),
            ("a\tb\u{1b}", 12, "a\\tb\\u{1b}  "),
            ("e\u{301}", 3, "e\u{301}  "),
            ("\u{202e}x", 10, "\\u{202e}x "),
        ];
        for (text, width, want) in cases {
            let got = cell(text, *width);
            assert_eq!(got, *want, "{text:?}");
            assert_eq!(got.width(), *width, "{text:?}");
        }
    }

    #[test]
    fn an_entity_keeps_its_id_whole_and_cuts_the_name() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("eng", "g1", 20, "eng (g1)            "),
            ("engineering team x", "g1", 20, "engineering te… (g1)"),
            ("eng", "0123456789abcdefghij", 20, "eng (012345…)       "),
            ("開発チーム東京", "g1", 16, "開発チーム… (g1)"),
        ];
        for (name, id, width, want) in cases {
            assert_eq!(entity_cell(name, id, *width), *want, "{name:?} {id:?}");
        }
    }

    #[test]
    fn man_writes_a_page_per_command_titled_and_versioned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = write_pages(dir.path(), "2026-12-03").expect("write the pages");
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().expect("a file").to_string_lossy().into_owned())
            .collect();
        let mut want: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| format!("dirsync-{}.1", c.get_name()))
            .chain(["dirsync.1".to_owned()])
            .collect();
        want.sort();
        assert_eq!(names, want);
        let version = env!("CARGO_PKG_VERSION");
        for (path, name) in pages.iter().zip(&names) {
            let text = std::fs::read_to_string(path).expect("read a page");
            let title = name.trim_end_matches(".1");
            let th = format!(".TH {title} 1 2026-12-03 \"dirsync {version}\" \"dirsync manual\"");
            assert!(text.contains(&th), "{name}: {text}");
            assert!(text.contains(".SH NAME"), "{name}: {text}");
        }
        let sync = std::fs::read_to_string(dir.path().join("dirsync-sync.1")).expect("sync page");
        assert!(sync.contains("\\-\\-dry\\-run"), "{sync}");
    }
}
