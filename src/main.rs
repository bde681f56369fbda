//! The `authback` command: parses the command line, sets up logging and
//! signals, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use authback::{text, Config, Listeners};

#[derive(Parser)]
#[command(
    name = "authback",
    version,
    about = "Klarna authorization callbacks, delivered exactly once"
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "AUTHBACK_CONFIG",
        default_value = "config.toml"
    )]
    config: PathBuf,
    /// Log format on stderr (default: pretty on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the config: exit 0, or print every error and exit 1.
    Check {
        /// Also fail on every unmet item of README's production checklist.
        #[arg(long)]
        production: bool,
    },
    /// Print one callback URL for `merchant_urls.authorization`.
    MintUrl {
        /// The route's `name` in the config (e.g. klarna).
        #[arg(long)]
        route: String,
        /// The order or cart reference the URL is bound to: 1-128 characters
        /// of A-Z a-z 0-9 . _ ~ -
        #[arg(long)]
        reference: String,
        /// How long the URL stays valid.
        #[arg(long, default_value = "48h")]
        ttl: String,
    },
    /// Check, from where it runs, what would stop callbacks: the config,
    /// public_url (a probe POST through it to every route path, with a
    /// nonce from the admin API at admin.listen), the upstream, and
    /// Klarna's credentials and clock. Exit 0, or 1 if any check failed.
    Doctor {
        /// Extra CA certificates (PEM) to trust for public_url, e.g. a
        /// private or test CA. The Mozilla roots are always trusted.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// List, show, replay and resolve deliveries of a running authback,
    /// through its admin API (the token from AUTHBACK_ADMIN_TOKEN or
    /// admin.token).
    Deliveries(DeliveriesArgs),
}

#[derive(clap::Args)]
struct DeliveriesArgs {
    /// The admin API [default: http:// and admin.listen from the config].
    #[arg(long, global = true, value_name = "URL")]
    admin: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: DeliveriesAction,
}

#[derive(clap::Args)]
struct DeliveryFilters {
    #[arg(long)]
    route: Option<String>,
    #[arg(long)]
    session_id: Option<String>,
    #[arg(long)]
    reference: Option<String>,
    /// Received at or after: RFC 3339, or a duration back from now (2h).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Received before: RFC 3339, or a duration back from now (30m).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

impl DeliveryFilters {
    fn any(&self) -> bool {
        self.route.is_some()
            || self.session_id.is_some()
            || self.reference.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

impl From<DeliveryFilters> for authback::admin::console::cli::Filters {
    fn from(f: DeliveryFilters) -> Self {
        Self {
            route: f.route,
            session_id: f.session_id,
            reference: f.reference,
            since: f.since,
            until: f.until,
        }
    }
}

#[derive(Subcommand)]
enum DeliveriesAction {
    /// Deliveries, newest first.
    List {
        #[arg(long, value_parser = ["pending", "dead", "delivered", "unconfirmed", "resolved"])]
        state: Option<String>,
        #[command(flatten)]
        filters: DeliveryFilters,
        /// At most this many (the API's default is 100, its maximum 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// The next page: the cursor the previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One delivery with its attempts and its order watch.
    Show { id: String },
    /// Replay one dead delivery (ID), or every dead one matching the
    /// filters (--state dead; count them first with --dry-run).
    Replay {
        #[arg(required_unless_present = "state", conflicts_with_all = ["state", "dry_run"])]
        id: Option<String>,
        #[arg(long, value_parser = ["dead"])]
        state: Option<String>,
        #[command(flatten)]
        filters: DeliveryFilters,
        /// Count what would be replayed; replay nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Resolve one failed delivery (ID: dead, or unconfirmed) that was
    /// dealt with by hand, or every one matching the filters (--state dead
    /// or unconfirmed; count them first with --dry-run). It leaves the dead
    /// and unconfirmed lists; its record still answers Klarna's retries.
    Resolve {
        #[arg(required_unless_present = "state", conflicts_with_all = ["state", "dry_run"])]
        id: Option<String>,
        #[arg(long, value_parser = ["dead", "unconfirmed"])]
        state: Option<String>,
        #[command(flatten)]
        filters: DeliveryFilters,
        /// Why it is resolved: what was done about it (kept with it).
        #[arg(long, required_unless_present = "dry_run")]
        note: Option<String>,
        /// Count what would be resolved; resolve nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

const EXIT_CONFIG: u8 = 1;
const EXIT_RUNTIME: u8 = 2;
/// `doctor` found a failure (a bad config included).
const EXIT_DOCTOR_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let command = cli.command.unwrap_or(Command::Run);
    // The doctor reports a bad config as one of its checks.
    if let Command::Doctor { ca_file } = &command {
        return doctor(&cli.config, ca_file.as_deref());
    }
    // With --admin and the token in the environment, no config is needed.
    let command = match command {
        Command::Deliveries(args) => return deliveries(&cli.config, args),
        other => other,
    };
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Check { production } => check(&cli.config, &config, production),
        Command::MintUrl {
            route,
            reference,
            ttl,
        } => {
            let ttl = match text::parse_duration(&ttl) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("--ttl: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let now = authback::types::unix_ms() / 1000;
            match authback::callback::mint::for_route(&config, &route, &reference, ttl, now) {
                Ok((url, _)) => {
                    println!("{url}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mint-url: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Run => serve(config),
        // Taken before the config is loaded; correct here all the same.
        Command::Doctor { ca_file } => doctor(&cli.config, ca_file.as_deref()),
        Command::Deliveries(args) => deliveries(&cli.config, args),
    }
}

fn doctor(config: &std::path::Path, ca_file: Option<&std::path::Path>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("doctor: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let report = runtime.block_on(authback::doctor::run(config, ca_file));
    print!("{report}");
    if report.failed() {
        ExitCode::from(EXIT_DOCTOR_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `authback deliveries …`: 0 on success, 1 when the API answered an
/// error (or the config or arguments are bad), 2 when it could not be reached.
/// `authback check`: the config loaded; its certificate pair, its warnings
/// and, with `production`, README's checklist.
fn check(path: &std::path::Path, config: &Config, production: bool) -> ExitCode {
    let errors = authback::front::tls::check(config);
    if !errors.is_empty() {
        eprint!(
            "{}",
            authback::config::ConfigErrors {
                file: path.to_path_buf(),
                errors,
            }
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let gaps = match production {
        true => authback::config::production::gaps(config),
        false => Vec::new(),
    };
    // A warning that an unmet checklist item states again is left
    // out: one message per root cause.
    let restated = |w: &str| {
        gaps.iter().any(|g| {
            w.starts_with(&format!("{}:", g.key))
                || (g.key == "upstream.signing_secret" && w.contains("no upstream.signing_secret"))
        })
    };
    for w in config.warnings.iter().filter(|w| !restated(w)) {
        eprintln!("warning: {w}");
    }
    if !config.builtin_ip_lists.is_empty() {
        eprintln!(
            "note: allow_ips uses Klarna's built-in address lists ({}), taken from its documentation on {}; to follow a change before a new release, set [ip_sets] {} = \"file:PATH\" (docs/operations.md)",
            config.builtin_ip_lists.join(", "),
            authback::config::KLARNA_IP_LISTS_DATE,
            config.builtin_ip_lists[0]
        );
    }
    if !gaps.is_empty() {
        let n = gaps.len();
        let path = path.display();
        eprintln!(
            "{path}: not ready for production: {n} item{} of the checklist unmet",
            if n == 1 { "" } else { "s" }
        );
        for g in &gaps {
            eprintln!("  {path}: {g}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "{}: ok{}",
        path.display(),
        if production {
            " (production checklist met)"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

fn deliveries(config_path: &std::path::Path, args: DeliveriesArgs) -> ExitCode {
    use authback::admin::console::cli::{self, CliError, Target};
    // Only [admin] is read: listing deliveries needs no route secret.
    let config = if args.admin.is_some() && !config_path.exists() {
        None
    } else {
        match Config::load_admin(config_path) {
            Ok(c) => Some(c),
            Err(e) => {
                eprint!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let token = std::env::var("AUTHBACK_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            let t = config.as_ref()?.token.as_ref()?;
            Some(String::from_utf8_lossy(t.expose()).into_owned())
        });
    let target = match (&args.admin, &config) {
        (Some(url), _) => Target::new(url, token),
        (None, Some(c)) => Ok(Target::from_listen(c.listen, token)),
        (None, None) => Err(CliError::Usage("no config and no --admin".into())),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            eprintln!("deliveries: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let action = match action(args.action) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("deliveries {why}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deliveries: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(cli::run(&target, action, args.json)) {
        Ok((out, note)) => {
            print!("{out}");
            if let Some(n) = note {
                eprintln!("{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ CliError::Unreachable { .. }) => {
            eprintln!("deliveries: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("deliveries: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The `deliveries` subcommand as the CLI module runs it, or what is wrong
/// with its arguments.
fn action(action: DeliveriesAction) -> Result<authback::admin::console::cli::Action, &'static str> {
    use authback::admin::console::cli::Action;
    Ok(match action {
        DeliveriesAction::List {
            state,
            filters,
            limit,
            cursor,
        } => Action::List {
            state,
            filters: filters.into(),
            limit,
            cursor,
        },
        DeliveriesAction::Show { id } => Action::Show { id },
        DeliveriesAction::Replay {
            id: Some(id),
            filters,
            ..
        } => {
            if filters.any() {
                return Err("replay: filters go with --state dead, not with an ID");
            }
            Action::Replay { id }
        }
        DeliveriesAction::Replay {
            id: None,
            filters,
            dry_run,
            ..
        } => Action::ReplayAll {
            filters: filters.into(),
            dry_run,
        },
        DeliveriesAction::Resolve {
            id,
            state,
            filters,
            note,
            dry_run,
        } => resolve_action(id, state, filters, note, dry_run)?,
    })
}

/// `deliveries resolve`: one delivery by its ID, or every one the filters
/// match.
fn resolve_action(
    id: Option<String>,
    state: Option<String>,
    filters: DeliveryFilters,
    note: Option<String>,
    dry_run: bool,
) -> Result<authback::admin::console::cli::Action, &'static str> {
    use authback::admin::console::cli::Action;
    match (id, state) {
        (Some(_), _) if filters.any() => {
            Err("resolve: filters go with --state dead or --state unconfirmed, not with an ID")
        }
        (Some(id), _) => Ok(Action::Resolve {
            id,
            note: note.unwrap_or_default(),
        }),
        (None, state) => Ok(Action::ResolveAll {
            state: state.unwrap_or_else(|| "dead".into()),
            filters: filters.into(),
            note,
            dry_run,
        }),
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot bind");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        match authback::run(config, listeners, terminate()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "authback failed");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

fn init_logging(format: Option<LogFormat>) {
    use std::io::IsTerminal;
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stderr().is_terminal(),
    };
    authback::ops::logging::init(json);
}

/// jemalloc: fewer instructions per allocation than glibc's malloc on the
/// per-request path, and memory handed back under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
