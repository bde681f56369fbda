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
    Check,
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
    /// public_url (a probe POST through it), the upstream, and Klarna's
    /// credentials and clock. Exit 0, or 1 if any check failed.
    Doctor {
        /// Extra CA certificates (PEM) to trust for public_url, e.g. a
        /// private or test CA. The Mozilla roots are always trusted.
        #[arg(long)]
        ca_file: Option<PathBuf>,
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
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command {
        Command::Check => {
            if let authback::config::TlsConfig::Files { cert, key, .. } = &config.server.tls {
                if let Err(e) = authback::tls::Reloader::load(cert.clone(), key.clone()) {
                    eprintln!(
                        "{}: 1 error\n  {}: server.tls: {e}",
                        cli.config.display(),
                        cli.config.display()
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: ok", cli.config.display());
            ExitCode::SUCCESS
        }
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
            match config.mint_url(&route, &reference, ttl, now) {
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
    authback::logging::init(json);
}
